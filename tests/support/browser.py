"""Headless Chromium driven by selenium, for tests with real browser clients (the official WebSDK).

One Chromium runs per test module (starting it costs about a second); every test gets a fresh page:
the `browser` fixture leaves the previous page for about:blank (which closes its WebSockets) and drains
the console log. Selenium is pointed at the Debian chromium and chromedriver, so selenium-manager never
downloads anything.

Waits are conditions with deadlines (`Browser.wait_until`, `Browser.wait_js`), never sleeps. When a
wait runs out, the error carries the browser console log; when a test fails, its console log is added
to the test report (shown under the failure).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-dev-shm-usage",
)

T = TypeVar("T")


class BrowserTimeout(AssertionError):
    pass


class Browser:
    """A thin layer over a selenium Chrome driver: run JS, wait on conditions, read the console."""

    def __init__(self, driver: webdriver.Chrome):
        self.driver = driver
        self.console: list[dict[str, Any]] = []  # every console entry seen since the page was opened

    # -- pages ------------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    def reset(self) -> None:
        """Leave the current page (closing its sockets) and forget its console log."""
        try:
            self.driver.get("about:blank")
        finally:
            self.console_log()
            self.console.clear()

    # -- JavaScript -------------------------------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        """Run `script` as a function body (use `return`); arguments are `arguments[i]`."""
        try:
            return self.driver.execute_script(script, *args)
        except JavascriptException as exc:
            raise AssertionError(f"script failed: {exc.msg}\n{self.describe()}") from None

    def js_async(self, script: str, *args: Any, timeout: float = 10.0) -> Any:
        """Run `script` with a callback as its last argument: `var done = arguments[arguments.length-1]`.
        The result is what the script passes to the callback."""
        self.driver.set_script_timeout(timeout)
        try:
            return self.driver.execute_async_script(script, *args)
        except TimeoutException:
            raise BrowserTimeout(f"async script did not call back within {timeout} s\n"
                                 f"{self.describe()}") from None
        except JavascriptException as exc:
            raise AssertionError(f"async script failed: {exc.msg}\n{self.describe()}") from None

    # -- waiting ----------------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], T], timeout: float = 10.0, what: str = "condition",
                   interval: float = 0.05) -> T:
        """Call `condition` until it returns something truthy (returned) or `timeout` runs out."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = condition()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise BrowserTimeout(f"timed out after {timeout} s waiting for {what} "
                                     f"(last value: {last!r})\n{self.describe()}")
            time.sleep(interval)  # poll interval of a condition with a deadline, not a wait for time

    def wait_js(self, expression: str, *args: Any, timeout: float = 10.0, what: str | None = None) -> Any:
        """Wait until the JS `expression` (a function body with `return`) gives a truthy value."""
        return self.wait_until(lambda: self.js(expression, *args), timeout, what or expression)

    # -- diagnostics ------------------------------------------------------------------------------

    def console_log(self) -> list[dict[str, Any]]:
        """Every console entry of the current page so far (chromedriver hands each out once)."""
        try:
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass
        return self.console

    def console_text(self) -> str:
        lines = [f"{e.get('level', '?'):7} {e.get('message', '')}" for e in self.console_log()]
        return "\n".join(lines) if lines else "(empty)"

    def describe(self) -> str:
        """The page's URL, the test harness state (if any) and the console log, for error messages."""
        try:
            url = self.driver.current_url
            state = self.driver.execute_script(
                "return window.__t ? JSON.stringify({events: window.__t.events, "
                "sockets: window.__t.sockets}) : null")
        except WebDriverException as exc:
            url, state = "?", f"(page state unavailable: {exc.msg})"
        return f"page: {url}\nharness state: {state}\nbrowser console:\n{self.console_text()}"


def chromium_options(user_data_dir: str) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


def start_chromium(user_data_dir: str) -> webdriver.Chrome:
    # An explicit driver path and binary: selenium-manager is never consulted.
    service = Service(CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=chromium_options(user_data_dir))


@pytest.fixture(scope="module", name="chromium")
def chromium_fixture() -> Iterator[webdriver.Chrome]:
    """One headless Chromium (fresh profile) for a whole test module."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(name="browser")
def browser_fixture(chromium: webdriver.Chrome, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A fresh page in the module's Chromium; the console log joins the report of a failed test."""
    b = Browser(chromium)
    b.reset()
    failed_before = request.session.testsfailed
    yield b
    failed = request.session.testsfailed > failed_before
    if failed:
        # Teardown sections of a failed test are printed with its failure.
        request.node.add_report_section("teardown", "browser console", b.describe())
    b.reset()


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)
