"""The page identity and the rendered-snippet cache both adapters use (journy_core.page), without a framework."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from journy_core.errors import InvalidArgumentError
from journy_core.page import NOBODY, PageIdentity, SnippetCache, property_values
from journy_core.snippet import SnippetEvent, Tracker, render_snippet

TRACKER = Tracker("T1", "https://go.acme.com")
SETTINGS = object()  # what an adapter passes: its settings object, compared by identity
SECRET = "s3cret"


class Marked(str):
    """An adapter's safe-HTML type (Django's SafeString, Flask's Markup)."""


def calls(page: str) -> dict[str, Any]:
    """The journy(...) calls of a page by command (the last one of each)."""
    found: dict[str, Any] = {}
    for command, args in re.findall(r'^journy\("(\w+)"(?:, (.*))?\);$', page, re.MULTILINE):
        found[command] = json.loads(args) if args else None
    return found


def page(cache: SnippetCache[Any], who: PageIdentity = NOBODY, **options: Any) -> str:
    tracker = options.pop("tracker", TRACKER)
    settings = options.pop("settings", SETTINGS)
    screen = options.pop("screen", None)
    html: str = cache.render(tracker, settings, SECRET, who, screen, True, **options)
    return html


def test_a_page_seen_again_is_the_same_marked_object_and_equals_an_uncached_render() -> None:
    cache = SnippetCache(Marked)
    who = PageIdentity(7, "ada@acme.test", property_values({"plan": "pro"}), 3, property_values({"seats": 4}))
    first = page(cache, who)
    assert isinstance(first, Marked)
    assert page(cache, who) is first
    assert len(cache) == 1
    uncached = render_snippet(
        TRACKER,
        verification_secret=SECRET,
        user_id=7,
        email="ada@acme.test",
        user_properties={"plan": "pro"},
        account_id=3,
        account_properties={"seats": 4},
    )
    assert first == uncached


@pytest.mark.parametrize("value", [7, "7", 7.0])
def test_the_key_tells_property_values_of_different_types_apart(value: object) -> None:
    cache = SnippetCache(str)
    for other in (7, "7", True, 7.0):
        page(cache, PageIdentity(1, user_properties=property_values({"seats": other})))
    html = page(cache, PageIdentity(1, user_properties=property_values({"seats": value})))
    assert calls(html)["identify"]["properties"]["seats"] == value
    assert type(calls(html)["identify"]["properties"]["seats"]) is type(value)
    assert len(cache) == 4


def test_an_id_of_another_type_is_not_served_the_page_of_an_equal_one() -> None:
    cache = SnippetCache(str)
    page(cache, PageIdentity(user_id=1))
    page(cache, PageIdentity(user_id="1"))
    assert len(cache) == 2  # the same HTML, two entries: "1" is not the int 1
    with pytest.raises(InvalidArgumentError) as info:  # 1 == True, but True is no ID
        page(cache, PageIdentity(user_id=True))
    assert info.value.argument == "user_id"
    with pytest.raises(InvalidArgumentError):
        page(cache, PageIdentity(user_id=7, account_id=True))


def test_a_changed_property_shows_on_the_next_page() -> None:
    cache = SnippetCache(str)
    before = page(cache, PageIdentity(1, user_properties=property_values({"plan": "free"})))
    assert calls(before)["identify"]["properties"] == {"plan": "free"}
    after = page(cache, PageIdentity(1, user_properties=property_values({"plan": "pro"})))
    assert calls(after)["identify"]["properties"] == {"plan": "pro"}


def test_the_cache_is_bounded_and_starts_over_when_full() -> None:
    cache = SnippetCache(str, size=3)
    for user_id in range(10):
        html = page(cache, PageIdentity(user_id))
        assert calls(html)["identify"]["userId"] == str(user_id)
        assert 1 <= len(cache) <= 3


def test_a_new_tracker_starts_the_cache_over() -> None:
    cache = SnippetCache(str)
    who = PageIdentity(1)
    page(cache, who)
    page(cache, PageIdentity(2))
    refreshed = Tracker("T2", "https://go.acme.com")
    assert calls(page(cache, who, tracker=refreshed))["init"]["trackerId"] == "T2"
    assert len(cache) == 1
    # an equal tracker fetched again is a new object: its pages are its own
    again = Tracker("T2", "https://go.acme.com")
    page(cache, who, tracker=again)
    assert len(cache) == 1


def test_new_settings_start_the_cache_over() -> None:
    cache = SnippetCache(str)
    page(cache, PageIdentity(1))
    page(cache, PageIdentity(2))
    page(cache, PageIdentity(1), settings=object())
    assert len(cache) == 1


def test_the_verification_secret_is_part_of_the_key() -> None:
    cache = SnippetCache(str)
    signed = cache.render(TRACKER, SETTINGS, "one", PageIdentity(1), None, True)
    other = cache.render(TRACKER, SETTINGS, "two", PageIdentity(1), None, True)
    unsigned = cache.render(TRACKER, SETTINGS, None, PageIdentity(1), None, True)
    assert calls(signed)["identify"]["verification"] != calls(other)["identify"]["verification"]
    assert "verification" not in calls(unsigned)["identify"]


def test_unhashable_property_values_are_rendered_but_not_cached() -> None:
    cache = SnippetCache(Marked)
    who = PageIdentity(1, user_properties=property_values({"roles": ["admin", "billing"]}))
    html = page(cache, who, nonce="n1")
    assert isinstance(html, Marked)
    assert calls(html)["identify"]["properties"] == {"roles": ["admin", "billing"]}
    assert html.count('nonce="n1"') == 2
    assert len(cache) == 0


def test_a_nonce_is_added_after_the_cache_as_the_renderer_adds_it() -> None:
    cache = SnippetCache(Marked)
    who = PageIdentity(1, account_id=2)
    first = page(cache, who, nonce='n"1')
    second = page(cache, who, nonce="n2")
    assert isinstance(second, Marked)
    assert len(cache) == 1  # one entry, without a nonce
    assert first == render_snippet(TRACKER, verification_secret=SECRET, user_id=1, account_id=2, nonce='n"1')
    assert second.count('nonce="n2"') == 2
    assert "n1" not in second
    assert 'nonce="n&quot;1"' in first
    assert "nonce" not in page(cache, who)


def test_a_page_with_events_is_rendered_anew_with_its_events() -> None:
    cache = SnippetCache(str)
    events = [SnippetEvent("opened_billing", {"tab": "invoices"})]
    html = page(cache, PageIdentity(1, account_id=2), nonce="n3", events=events)
    assert calls(html)["event"]["name"] == "opened_billing"
    assert calls(html)["event"]["accountId"] == "2"
    assert html.count('nonce="n3"') == 2
    assert len(cache) == 0


def test_a_screen_and_no_pageview_are_pages_of_their_own() -> None:
    cache = SnippetCache(str)
    assert "pageview" in calls(page(cache, PageIdentity(1)))
    assert calls(page(cache, PageIdentity(1), screen="Billing"))["screen"] == {"name": "Billing"}
    without = cache.render(TRACKER, SETTINGS, SECRET, PageIdentity(1), None, False)
    assert "pageview" not in calls(without)
    assert len(cache) == 3


def test_the_anonymous_page_names_nobody() -> None:
    html = page(SnippetCache(str))
    assert set(calls(html)) == {"init", "pageview"}


def test_property_values_keep_the_order_and_the_type_of_each_value() -> None:
    assert property_values(None) is None
    assert property_values({"b": True, "a": 1}) == (("b", bool, True), ("a", int, 1))


def test_a_page_by_fingerprint_makes_its_identity_only_when_not_cached() -> None:
    cache = SnippetCache(Marked)
    made: list[PageIdentity] = []

    def identify(who: PageIdentity) -> Any:
        return lambda: made.append(who) or who

    ada = PageIdentity(7, "ada@acme.test", property_values({"plan": "pro"}))
    first = cache.render_by(TRACKER, SETTINGS, SECRET, ("user", 7, "pro"), identify(ada), None, True)
    again = cache.render_by(TRACKER, SETTINGS, SECRET, ("user", 7, "pro"), identify(ada), None, True, "n1")
    assert made == [ada]  # the second page came from the cache
    assert first == page(SnippetCache(Marked), ada)  # what the identity's page is
    assert again == page(SnippetCache(Marked), ada, nonce="n1")
    grace = PageIdentity(8)
    assert '"userId":"8"' in cache.render_by(TRACKER, SETTINGS, SECRET, ("user", 8, None), identify(grace), None, True)
    assert made == [ada, grace]


def test_a_fingerprint_never_serves_a_page_cached_by_identity_nor_an_unhashable_one_a_cached_page() -> None:
    cache = SnippetCache(Marked)
    who = PageIdentity(7)
    page(cache, who)
    assert len(cache) == 1
    by_fingerprint = cache.render_by(TRACKER, SETTINGS, SECRET, who, lambda: PageIdentity(8), None, True)
    assert '"userId":"8"' in by_fingerprint  # the same tuple as a fingerprint is another key
    listed = cache.render_by(TRACKER, SETTINGS, SECRET, (["admin"],), lambda: PageIdentity(9), None, True)
    assert '"userId":"9"' in listed
    assert len(cache) == 2  # the unhashable fingerprint's page was rendered, not kept
