"""``INJECT_SNIPPET``'s rules (:mod:`journy_core.injection`): which responses get the snippet, and where it goes."""

from __future__ import annotations

import pytest

from journy_core.injection import inject, wants_injection

SNIPPET = '<script>window.journy=window.journy||function(){};journy("init", {});</script>'


@pytest.mark.parametrize(
    ("content_type", "encoding", "streamed", "expected"),
    [
        ("text/html; charset=utf-8", None, False, True),
        ("TEXT/HTML", "identity", False, True),
        ("application/json", None, False, False),
        ("text/html; charset=utf-8", "gzip", False, False),
        ("text/html; charset=utf-8", None, True, False),
        (None, None, False, False),
        ("text/htmlx", None, False, False),
    ],
)
def test_only_complete_uncompressed_html_pages_want_the_snippet(
    content_type: str | None, encoding: str | None, streamed: bool, expected: bool
) -> None:
    assert wants_injection(content_type, encoding, streamed) is expected


def test_the_snippet_goes_right_before_the_end_of_the_head() -> None:
    page = b"<html><head><title>x</title></HEAD ><body></head></body></html>"
    assert inject(page, SNIPPET) == (
        b"<html><head><title>x</title>" + SNIPPET.encode() + b"</HEAD ><body></head></body></html>"
    )


def test_a_page_without_a_head_gets_it_before_the_end_of_the_body() -> None:
    assert inject(b"<body>hi</body>", SNIPPET) == b"<body>hi" + SNIPPET.encode() + b"</body>"


def test_a_fragment_without_head_or_body_is_left_alone() -> None:
    assert inject(b"<p>a fragment for htmx</p>", SNIPPET) is None


@pytest.mark.parametrize(
    "page",
    [
        b"<html><head><script>window.journy=window.journy||function(){}</script></head></html>",
        b"<html><head><!-- journy.io tracking disabled: the visitor is staff --></head></html>",
    ],
)
def test_a_page_that_rendered_the_snippet_or_its_comment_itself_is_left_alone(page: bytes) -> None:
    assert inject(page, SNIPPET) is None


def test_the_snippet_is_encoded_in_the_pages_charset_or_left_out_when_it_cannot_be() -> None:
    snippet = "<script>window.journy=1;/* Zoë */</script>"
    assert (
        inject("<head></head>".encode("latin-1"), snippet, "latin-1")
        == b"<head>" + snippet.encode("latin-1") + b"</head>"
    )
    assert inject(b"<head></head>", "<script>/* \u4e2d */</script>", "latin-1") is None
    assert inject(b"<head></head>", snippet, "no-such-charset") is None
