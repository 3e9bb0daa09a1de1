"""The WebSDK's own demo page, as shipped in the npm package and served by us at /websdk/, works against
the server unmodified: a user clicks Connect, Publish and Play and sees both videos."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import ServerProcess

PAGE = "/websdk/examples/demo/streaming/two_way_streaming/two_way_streaming.html"


def test_two_way_streaming_demo_page(server: ServerProcess, browser: Browser) -> None:
    driver = browser.driver
    browser.open(server.rest_url + PAGE)
    url = driver.find_element(By.ID, "urlServer")
    url.clear()
    url.send_keys(server.ws_url)  # the page's default is ws://host:8080; the test server has its own port

    def text(element_id: str) -> str:
        return driver.find_element(By.ID, element_id).text

    driver.find_element(By.ID, "connectBtn").click()
    browser.wait_until(lambda: text("connectStatus") == "ESTABLISHED", 15, "ESTABLISHED on the demo page")
    driver.find_element(By.ID, "publishStream").clear()
    driver.find_element(By.ID, "publishStream").send_keys("demo")
    driver.find_element(By.ID, "publishBtn").click()
    browser.wait_until(lambda: text("publishStatus") == "PUBLISHING", 20, "PUBLISHING on the demo page")
    driver.find_element(By.ID, "playStream").clear()
    driver.find_element(By.ID, "playStream").send_keys("demo")
    driver.find_element(By.ID, "playBtn").click()
    browser.wait_until(lambda: text("playStatus") == "PLAYING", 20, "PLAYING on the demo page")
    # The player's video element shows the publisher's picture.
    browser.wait_until(lambda: browser.js("var v = document.querySelector('#remoteVideo video');"
                                          "return v && v.videoWidth > 0 && v.currentTime > 0.5;"),
                       20, "the player's video playing")
