# mypy: disable-error-code="import-untyped"
"""``{% load journy %}``: ``{% journy_snippet %}`` for the base layout, ``{% journy_event %}`` for page events.

.. code-block:: html+django

    {% load journy %}
    <head>
      ...
      {% journy_snippet %}                       {# or {% journy_snippet screen="Billing" %} #}
    </head>
    <body>
      {% journy_event "opened_billing" plan=org.plan %}

Both need the request in the context (``django.template.context_processors.request``, on by default).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from ..snippet import render_event, render_for_request

register = template.Library()


@register.simple_tag(takes_context=True)  # type: ignore[untyped-decorator]
def journy_snippet(context: template.Context, screen: str | None = None) -> SafeString:
    """The journy.io snippet for this request: init, identify, account, pageview (or ``screen``), page events."""
    return render_for_request(context.get("request"), screen=screen)


@register.simple_tag(takes_context=True)  # type: ignore[untyped-decorator]
def journy_event(context: template.Context, name: str, account: Any = None, **metadata: Any) -> SafeString:
    """``journy("event", {name, metadata, accountId, verification})`` in its own script tag; the keyword
    arguments are the metadata. Put it after ``{% journy_snippet %}``."""
    return render_event(context.get("request"), name, metadata or None, account=account)
