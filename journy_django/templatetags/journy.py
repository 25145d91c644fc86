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
from django.template.base import FilterExpression, token_kwargs
from django.template.exceptions import TemplateSyntaxError
from django.utils.safestring import SafeString

from ..snippet import render_event, render_for_request

register = template.Library()


class JournySnippetNode(template.Node):  # type: ignore[misc]
    """``{% journy_snippet [screen] [as varname] %}``, its arguments parsed once when the template compiles.

    What ``simple_tag`` rendered, without its per-call argument lists, ``**kwargs`` call and ``conditional_escape``
    (the snippet is already a ``SafeString``, which escaping returns unchanged).
    """

    child_nodelists = ()

    def __init__(self, screen: FilterExpression | None, target_var: str | None) -> None:
        self.screen = screen
        self.target_var = target_var

    def render(self, context: template.Context) -> SafeString:
        screen = self.screen
        html = render_for_request(context.get("request"), screen=None if screen is None else screen.resolve(context))
        if self.target_var is not None:
            context[self.target_var] = html
            return SafeString()
        return html


@register.tag  # type: ignore[untyped-decorator]
def journy_snippet(parser: template.base.Parser, token: template.base.Token) -> JournySnippetNode:
    """``{% journy_snippet %}``, ``{% journy_snippet screen="Billing" %}`` (or ``screen=var``, or the screen as its
    one positional argument), each optionally ``as varname``: the journy.io snippet for this request (init,
    identify, account, pageview or ``screen``, page events). What the ``simple_tag`` it replaces accepted."""
    bits = token.split_contents()
    name, bits = bits[0], bits[1:]
    target_var = None
    if len(bits) >= 2 and bits[-2] == "as":
        target_var = bits[-1]
        bits = bits[:-2]
    screen = None
    keyword_given = False
    for bit in bits:
        kwarg = token_kwargs([bit], parser)
        if kwarg:
            ((param, value),) = kwarg.items()
            if param != "screen":
                raise TemplateSyntaxError(
                    f"'{name}' received unexpected keyword argument '{param}' (it takes only screen=...)"
                )
            if screen is not None:
                raise TemplateSyntaxError(f"'{name}' received multiple values for keyword argument 'screen'")
            keyword_given = True
            screen = value
        elif keyword_given:
            raise TemplateSyntaxError(f"'{name}' received some positional argument(s) after some keyword argument(s)")
        elif screen is not None:
            raise TemplateSyntaxError(
                f"'{name}' received too many positional arguments (it takes one: the screen, or screen=...)"
            )
        else:
            screen = parser.compile_filter(bit)
    return JournySnippetNode(screen, target_var)


@register.simple_tag(takes_context=True)  # type: ignore[untyped-decorator]
def journy_event(context: template.Context, name: str, account: Any = None, **metadata: Any) -> SafeString:
    """``journy("event", {name, metadata, accountId, verification})`` in its own script tag; the keyword
    arguments are the metadata. Put it after ``{% journy_snippet %}``."""
    return render_event(context.get("request"), name, metadata or None, account=account)
