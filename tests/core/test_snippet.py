"""Snippet rendering: escaping against hostile values, verification, call order; the tracker cache."""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from journy_core.errors import InvalidArgumentError, NotFoundError
from journy_core.snippet import (
    SnippetEvent,
    Tracker,
    TrackerCache,
    disabled_comment,
    render_snippet,
    script_json,
)
from journy_core.verification import verification_hash

SECRET = "whsec_never-in-the-page-91f3"
TRACKER = Tracker("5e2c1a9b-8d2f-4b1e-9a51-0c3f5d7e9b21", "https://go.acme.com")

# A 100,000-character value made of the dangerous pieces, so that length and content are tested together.
_PIECE = "</script><!--\u2028&amp;\"'😀\u2029<script>"
LONG_HOSTILE = (_PIECE * (100_000 // len(_PIECE) + 1))[:100_000]

HOSTILE = {
    "user_id": "</script><script>alert(1)</script>",
    "email": "\"quotes'@</SCRIPT >.com",
    "user_prop_key": "<!--",
    "user_prop_value": "line\u2028separator\u2029paragraph",
    "account_id": "&amp;</script >",
    "account_prop_value": LONG_HOSTILE,
    "screen": "<!--<script>alert(2)</script>-->",
    "event_name": "</ScRiPt><script>alert(3)</script>",
    "metadata_key": "\\u003c/script\\u003e",
    "metadata_value": "${x}`y`</script\t>",
    "event_account": "'-alert(4)-'",
}


def script_elements(page: str) -> list[tuple[str, str]]:
    """(start tag, text) of each script element, split where an HTML parser would split them.

    In script data, the first ``</script`` (any case) ends the element; this is what a value must not produce.
    """
    found = []
    position = 0
    while (start := page.lower().find("<script", position)) != -1:
        tag_end = page.index(">", start) + 1
        close = page.lower().find("</script", tag_end)
        assert close != -1, "unclosed script element"
        found.append((page[start:tag_end], page[tag_end:close]))
        position = page.index(">", close) + 1
    return found


def inline_script(page: str) -> str:
    elements = script_elements(page)
    assert len(elements) == 2
    return elements[1][1]


def parsed_calls(page: str) -> list[list[Any]]:
    """The journy(...) calls of the inline script, read back as JSON (each call is one line)."""
    calls = []
    for line in inline_script(page).strip().splitlines()[1:]:
        assert line.startswith("journy(")
        assert line.endswith(");")
        calls.append(json.loads("[" + line[len("journy(") : -2] + "]"))
    return calls


def hostile_page(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "verification_secret": SECRET,
        "nonce": 'n0nce"><script>alert(5)</script>',
        "user_id": HOSTILE["user_id"],
        "email": HOSTILE["email"],
        "user_properties": {HOSTILE["user_prop_key"]: HOSTILE["user_prop_value"], "plan": "&amp;"},
        "account_id": HOSTILE["account_id"],
        "account_properties": {"name": HOSTILE["account_prop_value"]},
        "screen": HOSTILE["screen"],
        "events": [
            SnippetEvent(HOSTILE["event_name"], {HOSTILE["metadata_key"]: HOSTILE["metadata_value"]}),
            {"name": "switched_account", "account_id": HOSTILE["event_account"]},
        ],
    }
    arguments.update(overrides)
    return render_snippet(TRACKER, **arguments)


def expected_hostile_calls() -> list[list[Any]]:
    account = HOSTILE["account_id"]
    return [
        ["init", {"trackerId": TRACKER.tracker_id, "domain": "https://go.acme.com"}],
        [
            "identify",
            {
                "userId": HOSTILE["user_id"],
                "email": HOSTILE["email"],
                "verification": verification_hash(SECRET, HOSTILE["user_id"]),
                "properties": {HOSTILE["user_prop_key"]: HOSTILE["user_prop_value"], "plan": "&amp;"},
            },
        ],
        [
            "account",
            {
                "accountId": account,
                "verification": verification_hash(SECRET, account),
                "properties": {"name": HOSTILE["account_prop_value"]},
            },
        ],
        [
            "screen",
            {
                "name": HOSTILE["screen"],
                "accountId": account,
                "verification": verification_hash(SECRET, account),
            },
        ],
        [
            "event",
            {
                "name": HOSTILE["event_name"],
                "accountId": account,
                "verification": verification_hash(SECRET, account),
                "metadata": {HOSTILE["metadata_key"]: HOSTILE["metadata_value"]},
            },
        ],
        [
            "event",
            {
                "name": "switched_account",
                "accountId": HOSTILE["event_account"],
                "verification": verification_hash(SECRET, HOSTILE["event_account"]),
            },
        ],
    ]


# -- script_json -------------------------------------------------------------------------------------------


def test_script_json_escapes_html_characters_and_line_separators() -> None:
    text = script_json({"a": "</script><!--&\u2028\u2029"})
    assert text == '{"a":"\\u003c/script\\u003e\\u003c!--\\u0026\\u2028\\u2029"}'


def test_script_json_escapes_keys_too() -> None:
    assert "<" not in script_json({"</script>": 1})


def test_script_json_reads_back_as_the_same_value() -> None:
    value = {"k": ["</script>", "&amp;", "\u2028", "é😀", 1, 2.5, True, None]}
    assert json.loads(script_json(value)) == value


def test_script_json_is_compact_and_keeps_non_ascii_readable() -> None:
    assert script_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_script_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        script_json(float("nan"))


# -- escaping against hostile values -----------------------------------------------------------------------


def test_hostile_values_cannot_close_the_script_elements() -> None:
    page = hostile_page()
    # Only our own two elements are closed: one for the loader, one for the inline script.
    assert len(re.findall(r"</script", page, re.IGNORECASE)) == 2
    assert len(re.findall(r"<script", page, re.IGNORECASE)) == 2
    assert page.endswith("</script>")
    # No "<" at all inside the inline script: no "</script", no "<!--" to enter the escaped script states.
    assert "<" not in inline_script(page)


def test_hostile_values_read_back_exactly() -> None:
    assert parsed_calls(hostile_page()) == expected_hostile_calls()


def test_output_has_no_raw_line_or_paragraph_separators() -> None:
    page = hostile_page()
    assert "\u2028" not in page
    assert "\u2029" not in page


def test_verification_secret_never_appears_in_the_output() -> None:
    page = hostile_page()
    assert SECRET not in page
    assert SECRET.encode().hex() not in page


def test_long_value_is_written_whole() -> None:
    calls = parsed_calls(hostile_page())
    assert len(calls[2][1]["properties"]["name"]) == 100_000


def test_loader_src_attribute_is_escaped() -> None:
    tracker = Tracker("T1", "https://go.acme.com", script_path='/t.js?a="><script>alert(6)</script>')
    page = render_snippet(tracker)
    loader_tag = script_elements(page)[0][0]
    assert loader_tag == (
        '<script async src="https://go.acme.com/t.js?a=&quot;&gt;&lt;script&gt;alert(6)&lt;/script&gt;">'
    )
    assert len(re.findall(r"<script", page, re.IGNORECASE)) == 2


# -- nonce -------------------------------------------------------------------------------------------------


def test_nonce_is_on_every_script_tag_and_escaped() -> None:
    nonce = 'n0nce"><script>alert(5)</script>'
    page = hostile_page(nonce=nonce)
    tags = [tag for tag, _ in script_elements(page)]
    assert len(tags) == 2
    escaped = f'nonce="{html.escape(nonce, quote=True)}"'
    assert all(escaped in tag for tag in tags)
    assert nonce not in page


class LazyNonce:
    """Like django-csp's lazy nonce: falsy until turned into a string."""

    def __init__(self) -> None:
        self.used = False

    def __bool__(self) -> bool:
        return self.used

    def __str__(self) -> str:
        self.used = True
        return "lazy-abc123"


def test_falsy_nonce_object_is_still_rendered() -> None:
    page = render_snippet(TRACKER, nonce=LazyNonce())
    assert [tag.count('nonce="lazy-abc123"') for tag, _ in script_elements(page)] == [1, 1]


def test_empty_string_nonce_is_rendered_as_given() -> None:
    page = render_snippet(TRACKER, nonce="")
    assert page.count('nonce=""') == 2


def test_no_nonce_attribute_without_a_nonce() -> None:
    assert "nonce" not in render_snippet(TRACKER)


# -- calls, their order and their verification ---------------------------------------------------------------


def test_minimal_snippet_is_init_then_argument_less_pageview() -> None:
    page = render_snippet(TRACKER)
    assert parsed_calls(page) == [
        ["init", {"trackerId": TRACKER.tracker_id, "domain": "https://go.acme.com"}],
        ["pageview"],
    ]
    assert 'journy("pageview");' in page


def test_loader_tag_comes_first_and_is_async() -> None:
    page = render_snippet(TRACKER)
    assert page.startswith('<script async src="https://go.acme.com/tracker.js"></script>\n<script>\n')


def test_loader_stub_avoids_logical_assignment_for_older_browsers() -> None:
    script = inline_script(render_snippet(TRACKER))
    assert "||=" not in script
    assert script.strip().splitlines()[0].startswith("window.journy=window.journy||function(")


def test_calls_come_in_order_init_identify_account_screen_events() -> None:
    page = render_snippet(
        TRACKER,
        user_id=1,
        account_id=2,
        screen="Settings",
        events=[SnippetEvent("a"), SnippetEvent("b")],
    )
    assert [call[0] for call in parsed_calls(page)] == [
        "init",
        "identify",
        "account",
        "screen",
        "event",
        "event",
    ]


def test_pageview_carries_the_account_and_its_verification() -> None:
    page = render_snippet(TRACKER, account_id=7, verification_secret=SECRET)
    assert parsed_calls(page)[-1] == [
        "pageview",
        {"accountId": "7", "verification": verification_hash(SECRET, 7)},
    ]


def test_screen_replaces_the_pageview() -> None:
    calls = parsed_calls(render_snippet(TRACKER, screen="Team settings"))
    assert [call[0] for call in calls] == ["init", "screen"]
    assert calls[1] == ["screen", {"name": "Team settings"}]


def test_pageview_false_sends_no_pageview() -> None:
    assert [call[0] for call in parsed_calls(render_snippet(TRACKER, pageview=False))] == ["init"]


def test_no_identify_without_a_user() -> None:
    page = render_snippet(TRACKER, account_id=3, verification_secret=SECRET)
    assert "identify" not in [call[0] for call in parsed_calls(page)]


def test_identify_by_email_alone_has_no_verification() -> None:
    page = render_snippet(TRACKER, email="ada@acme.com", verification_secret=SECRET)
    assert parsed_calls(page)[1] == ["identify", {"email": "ada@acme.com"}]


def test_verification_values_equal_verification_hash() -> None:
    user = uuid.UUID("0b4c3a4e-2f7e-4a6c-9a3b-5f1d2e3c4b5a")
    page = render_snippet(
        TRACKER,
        verification_secret=SECRET,
        user_id=user,
        account_id=30,
        events=[SnippetEvent("created_invoice"), SnippetEvent("joined", account_id="31")],
    )
    found = {
        (call[0], call[1].get("userId") or call[1].get("accountId")): call[1].get("verification")
        for call in parsed_calls(page)[1:]
    }
    assert found == {
        ("identify", str(user)): verification_hash(SECRET, user),
        ("account", "30"): verification_hash(SECRET, "30"),
        ("pageview", "30"): verification_hash(SECRET, "30"),
        ("event", "30"): verification_hash(SECRET, "30"),
        ("event", "31"): verification_hash(SECRET, "31"),
    }


def test_bytes_secret_gives_the_same_verification_as_str() -> None:
    as_str = render_snippet(TRACKER, user_id=1, verification_secret="clé")
    as_bytes = render_snippet(TRACKER, user_id=1, verification_secret="clé".encode())
    assert as_str == as_bytes


def test_no_verification_without_a_secret() -> None:
    page = render_snippet(TRACKER, user_id=1, account_id=2, events=[SnippetEvent("x")])
    assert "verification" not in page


def test_event_account_defaults_to_the_page_account_and_can_be_overridden() -> None:
    page = render_snippet(
        TRACKER,
        account_id=5,
        pageview=False,
        events=[
            SnippetEvent("on_page_account"),
            {"name": "elsewhere", "account_id": 6},
            SnippetEvent("m", {"n": 1}),
        ],
    )
    assert parsed_calls(page)[2:] == [
        ["event", {"name": "on_page_account", "accountId": "5"}],
        ["event", {"name": "elsewhere", "accountId": "6"}],
        ["event", {"name": "m", "accountId": "5", "metadata": {"n": 1}}],
    ]


def test_event_without_any_account_has_no_account_id() -> None:
    page = render_snippet(TRACKER, pageview=False, events=[{"name": "signed_in"}])
    assert parsed_calls(page)[1] == ["event", {"name": "signed_in"}]


def test_properties_and_metadata_are_serialized_by_the_api_rules() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    page = render_snippet(
        TRACKER,
        user_id=1,
        user_properties={"registered_at": naive, "tags": {"b", "a"}, "gone": None},
        pageview=False,
        events=[SnippetEvent("paid", {"at": naive, "amount": 10})],
        naive_timezone=timezone(timedelta(hours=2)),
    )
    calls = parsed_calls(page)
    assert calls[1][1]["properties"] == {
        "registered_at": "2024-01-02T01:04:05+00:00",
        "tags": ["a", "b"],
        "gone": None,
    }
    assert calls[2][1]["metadata"] == {"at": "2024-01-02T01:04:05+00:00", "amount": 10}


def test_empty_properties_are_left_out() -> None:
    page = render_snippet(TRACKER, user_id=1, user_properties={}, account_id=2, account_properties={})
    assert "properties" not in page


def test_output_is_deterministic() -> None:
    assert hostile_page() == hostile_page()


def test_tracker_site_id_is_passed_to_init() -> None:
    page = render_snippet(Tracker("T1", "https://go.acme.com", domain="acme.com", site_id="S9"))
    assert parsed_calls(page)[0] == ["init", {"trackerId": "T1", "domain": "acme.com", "siteId": "S9"}]


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": 4.5}, "user_id"),
        ({"email": "  "}, "email"),
        ({"account_id": None, "account_properties": {"a": 1}}, "account_properties"),
        ({"user_properties": {"a": 1}}, "user_properties"),
        ({"user_id": 1, "user_properties": {"a": object()}}, "user_properties['a']"),
        ({"account_id": 1, "account_properties": {"a": float("inf")}}, "account_properties['a']"),
        ({"account_id": []}, "account_id"),
        ({"screen": ""}, "screen"),
        ({"verification_secret": " "}, "verification_secret"),
        ({"verification_secret": 123}, "verification_secret"),
        ({"user_id": "\ud800"}, "user_id"),
        ({"user_id": 1, "user_properties": {"a": "x\udfff"}}, "user_properties['a']"),
        ({"screen": "\udc80"}, "screen"),
    ],
)
def test_bad_input_raises_invalid_argument_naming_it(arguments: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        render_snippet(TRACKER, **arguments)
    assert info.value.argument == argument


@pytest.mark.parametrize(
    ("event", "argument"),
    [
        (SnippetEvent(""), "events[1].name"),
        (SnippetEvent("x", {"a": None}), "events[1].metadata['a']"),
        (SnippetEvent("x", {"tags": ["a", "b"]}), "events[1].metadata['tags']"),
        (SnippetEvent("x", {"note": "\ud800"}), "events[1].metadata['note']"),
        (SnippetEvent("\ud800"), "events[1].name"),
        (SnippetEvent("x", {"n": 10**400}), "events[1].metadata['n']"),
        (SnippetEvent("x", account_id=""), "events[1].account_id"),
        ({"name": "x", "accountId": "1"}, "events[1]"),
        ({"metadata": {}}, "events[1]"),
        ("signed_in", "events[1]"),
    ],
)
def test_a_bad_page_event_is_left_out_with_a_comment_and_a_warning_and_the_rest_renders(
    event: object, argument: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="journy"):
        page = render_snippet(
            TRACKER,
            user_id=7,
            events=[SnippetEvent("first"), event, SnippetEvent("last")],  # type: ignore[list-item]
        )
    page.encode("utf-8")  # a lone surrogate never reaches the page: it would fail to encode (a 500)
    assert [call[0] for call in parsed_calls(page)] == ["init", "identify", "pageview", "event", "event"]
    assert [call[1]["name"] for call in parsed_calls(page)[3:]] == ["first", "last"]
    comment = page.split("</script>")[-1]
    assert comment.startswith("\n<!-- journy.io: page event ")
    assert f"left out ({argument} is invalid; see the journy log) -->" in comment
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert argument in caplog.records[0].getMessage()


def test_a_bad_single_event_script_renders_a_comment_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    from journy_core.snippet import render_event_script

    with caplog.at_level(logging.WARNING, logger="journy"):
        page = render_event_script(SnippetEvent("opened\ud800", {"a": 1}))
    page.encode("utf-8")
    assert page.startswith("<!-- journy.io: page event 'opened\\ud800' left out (name is invalid")
    assert "<script" not in page
    assert "opened" in caplog.text


def test_page_event_checks_with_the_rules_and_argument_names_of_track() -> None:
    from journy_core import operations as ops
    from journy_core.snippet import page_event

    cases: list[tuple[Any, Any, Any]] = [
        ("", None, None),
        ("opened", {"tags": ["a", "b"]}, None),
        ("opened", {"note": "\ud800"}, None),
        ("opened\udfff", None, None),
        ("opened", {"n": 10**400}, None),
        ("opened", {"at": None}, None),
        ("opened", None, "\ud800"),
        ("opened", None, True),
    ]
    for name, metadata, account_id in cases:
        with pytest.raises(InvalidArgumentError) as from_page:
            page_event(name, metadata, account_id)
        with pytest.raises(InvalidArgumentError) as from_track:
            ops.track(name, account_id=account_id if account_id is not None else 1, metadata=metadata)
        assert from_page.value.argument == from_track.value.argument
    event = page_event("opened", {"at": datetime(2024, 1, 2, 3, 4, 5), "n": 1}, 7)
    assert event == SnippetEvent("opened", {"at": "2024-01-02T03:04:05+00:00", "n": 1}, "7")


def test_a_lone_surrogate_in_a_fetched_snippet_never_reaches_the_page_unescaped() -> None:
    assert script_json({"a": "x\ud800y"}) == '{"a":"x\\ud800y"}'
    assert json.loads(script_json({"a": "x\ud800y"})) == {"a": "x\ud800y"}  # the same string for JavaScript
    with pytest.raises(InvalidArgumentError) as info:
        Tracker.from_snippet(snippet_for("T1").replace('"T1"', '"T\\ud800"'))
    assert info.value.argument == "snippet"


def test_a_disabled_comment_always_encodes() -> None:
    disabled_comment("the snippet of 'acme\ud800.com' is missing").encode("utf-8")


def test_bad_input_error_does_not_show_the_secret() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        render_snippet(TRACKER, verification_secret=SECRET, user_id=object())
    assert SECRET not in str(info.value)


def test_render_refuses_something_that_is_not_a_tracker() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        render_snippet("https://go.acme.com")  # type: ignore[arg-type]
    assert info.value.argument == "tracker"


# -- the inline script run by a JavaScript engine ----------------------------------------------------------

NODE = shutil.which("node") or "/usr/bin/node"

# Runs the inline script in a fresh V8 context whose global object is also `window`, as in a browser: the
# snippet's bare journy(...) calls resolve through the global object, exactly like window.journy. Nothing else
# is defined, so code that escaped its string would throw (or be recorded by the fake alert).
NODE_HARNESS = """
const vm = require("vm");
const fs = require("fs");
const code = fs.readFileSync(process.argv[2], "utf8");
const context = vm.createContext({});
vm.runInContext(
  "globalThis.window = globalThis;" +
  "globalThis.__alerts__ = [];" +
  "globalThis.alert = (m) => __alerts__.push(String(m));",
  context,
);
vm.runInContext(code, context, { filename: "journy-inline.js" });
process.stdout.write(vm.runInContext(
  "JSON.stringify({alerts: __alerts__, queue: window.__journy_queue__.map(e => [e.command, e.args])})",
  context,
));
"""


def run_in_node(script: str, tmp_path: Path) -> dict[str, Any]:
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS, encoding="utf-8")
    source = tmp_path / "inline.js"
    source.write_text(script, encoding="utf-8")
    done = subprocess.run(
        [NODE, str(harness), str(source)],
        check=False,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


needs_node = pytest.mark.skipif(
    not shutil.which(NODE), reason="node is not installed; the rendered script cannot be executed"
)


@needs_node
def test_node_reads_hostile_values_back_exactly(tmp_path: Path) -> None:
    result = run_in_node(inline_script(hostile_page()), tmp_path)
    assert result["alerts"] == []
    assert result["queue"] == expected_hostile_calls()


@needs_node
def test_node_sees_pageview_without_arguments(tmp_path: Path) -> None:
    result = run_in_node(inline_script(render_snippet(TRACKER, email="ada@acme.com")), tmp_path)
    # JSON.stringify writes an undefined array item as null.
    assert result["queue"] == [
        ["init", {"trackerId": TRACKER.tracker_id, "domain": "https://go.acme.com"}],
        ["identify", {"email": "ada@acme.com"}],
        ["pageview", None],
    ]


def test_script_splitter_cuts_where_a_browser_would() -> None:
    # The checks above mean something only if an unescaped value breaks them, as a naive renderer's would.
    naive = '<script>journy("identify", {"userId":"</script><script>alert(1)</script>"});</script>'
    assert script_elements(naive) == [
        ("<script>", 'journy("identify", {"userId":"'),
        ("<script>", "alert(1)"),
    ]


# -- disabled_comment --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "no TRACKER_ID",
        "-->",
        "--!>",
        "<!-- nested -->",
        "--->",
        "trailing-",
        "trailing--",
        "-",
        "</script><script>alert(1)</script>",
        "<!-",
        ">",
        "->",
    ],
)
def test_disabled_comment_cannot_be_broken_out_of(reason: str) -> None:
    comment = disabled_comment(reason)
    assert comment.startswith("<!-- journy.io tracking disabled: ")
    assert comment.endswith(" -->")
    inner = comment[len("<!--") : -len("-->")]
    assert "--" not in inner
    assert "<" not in inner
    assert ">" not in inner


def test_disabled_comment_keeps_a_plain_reason_readable() -> None:
    expected = "<!-- journy.io tracking disabled: TRACKER_ID is not set -->"
    assert disabled_comment("TRACKER_ID is not set") == expected


# -- Tracker -----------------------------------------------------------------------------------------------


def test_tracker_defaults_init_domain_to_the_tracking_origin() -> None:
    tracker = Tracker("T1", "https://Go.Acme.com/")
    assert tracker.tracking_domain == "https://go.acme.com"
    assert tracker.domain == "https://go.acme.com"
    assert tracker.script_url == "https://go.acme.com/tracker.js"


def test_tracker_keeps_an_explicit_domain_and_script_path() -> None:
    tracker = Tracker("T1", "https://go.acme.com", script_path="/analytics.js", domain="acme.com")
    assert tracker.domain == "acme.com"
    assert tracker.script_url == "https://go.acme.com/analytics.js"


def test_tracker_accepts_plain_http_on_loopback() -> None:
    assert Tracker("T1", "http://localhost:8484").script_url == "http://localhost:8484/tracker.js"
    assert Tracker("T1", "http://127.0.0.1:9000").tracking_domain == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"tracker_id": ""}, "tracker_id"),
        ({"tracker_id": "  "}, "tracker_id"),
        ({"tracker_id": None}, "tracker_id"),
        ({"tracking_domain": "http://go.acme.com"}, "tracking_domain"),
        ({"tracking_domain": "go.acme.com"}, "tracking_domain"),
        ({"tracking_domain": "https://go.acme.com/js"}, "tracking_domain"),
        ({"tracking_domain": "https://user:pw@go.acme.com"}, "tracking_domain"),
        ({"tracking_domain": "ftp://go.acme.com"}, "tracking_domain"),
        ({"tracking_domain": 'https://go.acme.com"><script>'}, "tracking_domain"),
        ({"tracking_domain": "https://go.acme.com:port"}, "tracking_domain"),
        ({"tracking_domain": None}, "tracking_domain"),
        ({"script_path": "tracker.js"}, "script_path"),
        ({"script_path": "//evil.example/tracker.js"}, "script_path"),
        ({"script_path": "/tracker .js"}, "script_path"),
        ({"domain": ""}, "domain"),
        ({"domain": "a b"}, "domain"),
        ({"site_id": " "}, "site_id"),
    ],
)
def test_tracker_validation_names_the_field(arguments: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"tracker_id": "T1", "tracking_domain": "https://go.acme.com"}
    values.update(arguments)
    with pytest.raises(InvalidArgumentError) as info:
        Tracker(**values)
    assert info.value.argument == field


# -- Tracker.from_snippet ----------------------------------------------------------------------------------

STUB = (
    "window.journy=window.journy||function(_,n,o){window.__journy_queue__||(window.__journy_queue__=[]),"
    "window.__journy_queue__.push({command:_,args:n,date:Date.now(),callback:o})};"
)

SNIPPET_JS_KEYS = f"""<script src="https://go.acme.com/tracker.js" async></script>
<script>
  {STUB}
  journy("init", {{ trackerId: "5e2c1a9b-8d2f-4b1e-9a51-0c3f5d7e9b21", domain: "https://go.acme.com" }});
  journy("pageview");
</script>"""

SNIPPET_JSON_KEYS = """<script async src="https://go.acme.com/analytics.js"></script>
<script>
  window.journy = window.journy || function(command, args, callback) {
    (window.__journy_queue__ ||= []).push({command, args, date: Date.now(), callback})
  };
  journy("init", {"trackerId": "T-42", "domain": "https://go.acme.com", "siteId": "site-7"});
  journy("pageview");
</script>"""

SNIPPET_SINGLE_QUOTES = """<script>
  (function (w, d) {
    w.journy = w.journy || function (command, args, callback) {
      (w.__journy_queue__ = w.__journy_queue__ || []).push(
        {command: command, args: args, date: Date.now(), callback: callback}
      );
    };
    var s = d.createElement('script');
    s.async = true;
    s.src = 'https://track.example.org/analytics.js';
    d.head.appendChild(s);
  })(window, document);
  journy('init', {trackerId: 'abc\\'def', domain: 'example.org', siteId: 'S1'});
  journy('pageview');
</script>"""


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            SNIPPET_JS_KEYS,
            Tracker(
                "5e2c1a9b-8d2f-4b1e-9a51-0c3f5d7e9b21",
                "https://go.acme.com",
                "/tracker.js",
                "https://go.acme.com",
            ),
        ),
        (
            SNIPPET_JSON_KEYS,
            Tracker("T-42", "https://go.acme.com", "/analytics.js", "https://go.acme.com", "site-7"),
        ),
        (
            SNIPPET_SINGLE_QUOTES,
            Tracker("abc'def", "https://track.example.org", "/analytics.js", "example.org", "S1"),
        ),
        (
            '<script async src="http://localhost:8484/tracker.js"></script>'
            '<script>journy("init", {trackerId: "dev"});</script>',
            Tracker("dev", "http://localhost:8484", "/tracker.js", "http://localhost:8484"),
        ),
    ],
    ids=[
        "js-keys-tracker-js",
        "json-keys-analytics-js-site-id",
        "single-quotes-js-created-script",
        "localhost",
    ],
)
def test_from_snippet_reads_realistic_snippets(snippet: str, expected: Tracker) -> None:
    assert Tracker.from_snippet(snippet) == expected


def test_from_snippet_reads_back_a_rendered_snippet() -> None:
    tracker = Tracker("T1", "https://go.acme.com", "/analytics.js", "acme.com", "S2")
    assert Tracker.from_snippet(render_snippet(tracker, user_id=1, account_id=2)) == tracker


LOADER = '<script src="https://go.acme.com/tracker.js"></script>'


@pytest.mark.parametrize(
    "snippet",
    [
        "",
        "<p>Not found</p>",
        LOADER,
        LOADER + '<script>journy("init", {domain: "x"});</script>',
        '<script>journy("init", {trackerId: "T1"});</script>',
        LOADER.replace("https:", "http:") + '<script>journy("init", {trackerId: "T1"});</script>',
        LOADER + '<script>journy("init", {trackerId: "a\\x41"});</script>',
    ],
    ids=["empty", "html", "no-init", "no-tracker-id", "no-script-url", "plain-http", "unknown-escape"],
)
def test_from_snippet_refuses_what_it_cannot_read(snippet: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Tracker.from_snippet(snippet)
    assert info.value.argument == "snippet"


def test_from_snippet_refuses_a_non_string() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Tracker.from_snippet(None)  # type: ignore[arg-type]
    assert info.value.argument == "snippet"


# -- TrackerCache ------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Answers each call with the next item of ``answers``: a snippet string, or an exception to raise."""

    def __init__(self, *answers: str | BaseException) -> None:
        self.answers = list(answers)
        self.domains: list[str] = []

    def __call__(self, domain: str) -> str:
        self.domains.append(domain)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def snippet_for(tracker_id: str) -> str:
    return render_snippet(Tracker(tracker_id, "https://go.acme.com"))


def make_cache(fetch: Callable[[str], str], clock: FakeClock, **options: float) -> TrackerCache:
    return TrackerCache(fetch, "acme.com", clock=clock, **options)


def test_cache_fetches_in_the_background_for_its_domain() -> None:
    fetch, clock = FakeFetch(snippet_for("T1")), FakeClock()
    cache = make_cache(fetch, clock)
    assert fetch.domains == []
    assert cache.wait(5) == Tracker("T1", "https://go.acme.com")
    assert cache.get() == Tracker("T1", "https://go.acme.com")
    assert fetch.domains == ["acme.com"]


def test_cache_keeps_the_tracker_for_ttl_then_fetches_again() -> None:
    fetch, clock = FakeFetch(snippet_for("T1"), snippet_for("T2")), FakeClock()
    cache = make_cache(fetch, clock, ttl=100)
    first = cache.wait(5)
    clock.now += 99
    assert cache.get() is first
    assert len(fetch.domains) == 1
    clock.now += 2
    assert cache.get() is first  # stale: served while the refresh runs in the background
    refreshed = cache.wait(5)
    assert refreshed is not None
    assert refreshed.tracker_id == "T2"
    assert len(fetch.domains) == 2


def test_cache_failure_without_a_tracker_returns_none_and_waits_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch, clock = FakeFetch(NotFoundError(404, "site not found"), snippet_for("T1")), FakeClock()
    cache = make_cache(fetch, clock, retry_after=60)
    assert "is being fetched" in cache.why_missing()
    with caplog.at_level(logging.WARNING, logger="journy"):
        assert cache.wait(5) is None
    assert [record.name for record in caplog.records] == ["journy"]
    assert "404" in caplog.text
    assert "acme.com" in caplog.text
    assert "could not be fetched" in cache.why_missing()
    clock.now += 59
    assert cache.wait(5) is None
    assert len(fetch.domains) == 1
    clock.now += 2
    tracker = cache.wait(5)
    assert tracker is not None
    assert tracker.tracker_id == "T1"
    assert len(fetch.domains) == 2


def test_cache_failure_after_success_serves_the_last_good_tracker() -> None:
    fetch, clock = FakeFetch(snippet_for("T1"), RuntimeError("down"), snippet_for("T3")), FakeClock()
    cache = make_cache(fetch, clock, ttl=10, retry_after=30)
    good = cache.wait(5)
    clock.now += 11
    assert cache.wait(5) is good  # the refresh failed
    assert cache.get() is good
    clock.now += 29
    assert cache.wait(5) is good
    assert len(fetch.domains) == 2
    clock.now += 2
    latest = cache.wait(5)
    assert latest is not None
    assert latest.tracker_id == "T3"


def test_cache_treats_an_unreadable_snippet_as_a_failure() -> None:
    fetch, clock = FakeFetch("<p>maintenance</p>"), FakeClock()
    assert make_cache(fetch, clock).wait(5) is None


def test_cache_log_does_not_repeat_messages_of_unknown_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    leaked = "https://api.example/?api_key=sk_live_do_not_log"
    fetch, clock = FakeFetch(RuntimeError(leaked)), FakeClock()
    with caplog.at_level(logging.WARNING, logger="journy"):
        make_cache(fetch, clock).wait(5)
    assert "RuntimeError" in caplog.text
    assert "sk_live_do_not_log" not in caplog.text


def test_cache_never_raises_even_when_the_clock_fails() -> None:
    def broken_clock() -> float:
        raise OSError("no clock")

    cache = TrackerCache(FakeFetch(snippet_for("T1")), "acme.com", clock=broken_clock)
    assert cache.get() is None
    assert cache.wait(5) in (None, Tracker("T1", "https://go.acme.com"))


def test_no_get_waits_for_the_fetch_and_concurrent_gets_share_one_fetch() -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow_fetch(domain: str) -> str:
        calls.append(domain)
        release.wait(10)
        return snippet_for("T1")

    cache = TrackerCache(slow_fetch, "acme.com")
    results: list[Tracker | None] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [None] * 8  # every get() returned while the fetch was still waiting
    assert "is being fetched" in cache.why_missing()
    release.set()
    tracker = cache.wait(5)
    assert tracker is not None
    assert tracker.tracker_id == "T1"
    assert calls == ["acme.com"]


def test_stale_tracker_is_served_while_the_background_refreshes() -> None:
    clock = FakeClock()
    entered, release = threading.Event(), threading.Event()
    answers = iter([snippet_for("T1"), snippet_for("T2")])

    def fetch(domain: str) -> str:
        answer = next(answers)
        if answer == snippet_for("T2"):
            entered.set()
            release.wait(5)
        return answer

    cache = TrackerCache(fetch, "acme.com", ttl=10, clock=clock)
    old = cache.wait(5)
    clock.now += 11
    assert cache.get() is old  # starts the refresh, does not wait for it
    assert entered.wait(5)
    assert cache.get() is old
    release.set()
    fresh = cache.wait(5)
    assert fresh is not None
    assert fresh.tracker_id == "T2"


def test_a_forked_child_fetches_for_itself_instead_of_waiting_for_the_parents_fetch_forever() -> None:
    import os
    import warnings

    parent = os.getpid()
    release = threading.Event()

    def fetch(domain: str) -> str:
        if os.getpid() == parent:
            release.wait(10)  # the parent's fetch is in progress when the child is forked
        return snippet_for("child" if os.getpid() != parent else "parent")

    cache = TrackerCache(fetch, "acme.com")
    assert cache.get() is None  # the parent's fetch starts, and hangs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: this test is about that case
        pid = os.fork()
    if pid == 0:  # the child: its own fetch, or exit code 1
        code = 1
        try:
            tracker = cache.wait(5)
            code = 0 if tracker is not None and tracker.tracker_id == "child" else 1
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
    assert os.waitstatus_to_exitcode(status) == 0
    parent_tracker = cache.wait(5)
    assert parent_tracker is not None
    assert parent_tracker.tracker_id == "parent"


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"fetch": "not callable"}, "fetch"),
        ({"domain": " "}, "domain"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"retry_after": -1}, "retry_after"),
    ],
)
def test_cache_refuses_bad_configuration(arguments: dict[str, Any], argument: str) -> None:
    values: dict[str, Any] = {"fetch": FakeFetch(snippet_for("T1")), "domain": "acme.com"}
    values.update(arguments)
    with pytest.raises(InvalidArgumentError) as info:
        TrackerCache(**values)
    assert info.value.argument == argument


def test_a_single_event_script_carries_the_stub_the_account_hash_and_the_nonce() -> None:
    from journy_core.snippet import render_event_script

    html_text = render_event_script(
        {"name": "</script>", "metadata": {"plan": "<b>"}, "account_id": 7}, verification_secret="s3cret", nonce="n<1"
    )
    assert html_text.startswith('<script nonce="n&lt;1">')
    assert html_text.count("</script") == 1
    assert "s3cret" not in html_text
    assert verification_hash("s3cret", "7") in html_text
    assert 'journy("event", {"name":"\\u003c/script\\u003e"' in html_text
