"""restClientConfig parsing and its per-method rules, without I/O."""

from __future__ import annotations

from streaming.rest_config import HookKind, MethodConfig, RestClientConfig, kind_of


def test_defaults_follow_wcs_but_decisions_fail_closed() -> None:
    config = RestClientConfig()
    assert config.for_method("publishStream") == MethodConfig(on_error="FAIL", policy="NOTIFY")
    assert config.for_method("connect").on_error == "FAIL"
    assert config.for_method("StreamStatusEvent").on_error == "LOG"
    assert kind_of("connect") is HookKind.CONNECT
    assert kind_of("ConnectionStatusEvent") is HookKind.EVENT
    assert kind_of("OnDataEvent") is HookKind.INCOMING


def test_parse_reads_comma_lists_and_case() -> None:
    config, problems = RestClientConfig.parse({
        "publishStream": {"restExclude": "custom, sdp", "clientExclude": "", "restOnError": "log",
                          "restPolicy": "overwrite", "restOverwrite": "name,record"},
    })
    assert problems == []
    method = config.for_method("publishStream")
    assert method.rest_exclude == {"custom", "sdp"}
    assert method.on_error == "LOG"
    assert method.policy == "OVERWRITE"
    assert method.overwrite == {"name", "record"}


def test_bad_entries_are_skipped_with_a_reason() -> None:
    config, problems = RestClientConfig.parse({
        "publishStream": {"restPolicy": "SOMETIMES"},
        "playStream": "yes",
        "stopStream": {"restExclude": 5},
        "unPublishStream": {"restOnError": "LOG"},
    })
    assert len(problems) == 3
    assert any("restPolicy must be one of" in p for p in problems)
    assert config.for_method("publishStream").policy == "NOTIFY"  # the default stands
    assert config.for_method("unPublishStream").on_error == "LOG"
    assert RestClientConfig.parse("nonsense")[1] == ["restClientConfig is not an object; ignored"]


def test_overwrite_takes_only_listed_fields_and_never_context() -> None:
    method = MethodConfig(policy="OVERWRITE", overwrite=frozenset({"name", "sessionId"}))
    merged = method.merge_answer({"name": "a", "record": False, "sessionId": "s1"},
                                 {"name": "b", "record": True, "sessionId": "evil"},
                                 protected=("sessionId",))
    assert merged == {"name": "b", "record": False, "sessionId": "s1"}
    notify = MethodConfig(policy="NOTIFY", overwrite=frozenset({"name"}))
    assert notify.merge_answer({"name": "a"}, {"name": "b"}) == {"name": "a"}


def test_excludes() -> None:
    method = MethodConfig(rest_exclude=frozenset({"custom", "appKey"}), client_exclude=frozenset({"x"}))
    assert method.body_for_rest({"custom": 1, "appKey": "k", "y": 2}, protected=("appKey",)) == {
        "appKey": "k", "y": 2}
    assert method.for_client({"x": 1, "y": 2}) == {"y": 2}
