"""``{% journy_event %}``: a front-end event from a template, as a Jinja tag.

.. code-block:: html+jinja

    {% journy_event "opened_billing" %}
    {% journy_event "opened_billing", {"plan": team.plan} %}
    {% journy_event "opened_billing", plan=team.plan, seats=team.seats %}
    {% journy_event "opened_billing", {"plan": team.plan}, account=team %}

The metadata is a mapping, keyword arguments, or both (the keywords win); ``account=`` names the account when it is
not the page's. It renders what :func:`journy_flask.snippet.journy_event` renders: its own ``<script>`` with the
event's ``verification``, or an HTML comment saying why not.

A tag rather than a Jinja global: Jinja copies every global into each template's context on every
``render_template()`` (about as much work per global as the rest of a small page's journy work), while a tag costs
nothing in templates that do not use it. ``{{ journy_snippet() }}`` is the one global this extension registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context
from markupsafe import Markup

from .snippet import journy_event

__all__ = ["JournyExtension"]


class JournyExtension(Extension):
    """The Jinja extension ``Journy.init_app`` adds to ``app.jinja_env``: the ``{% journy_event %}`` tag."""

    tags = {"journy_event"}  # noqa: RUF012 - declared by jinja2.ext.Extension as an instance attribute

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        name = parser.parse_expression()
        metadata: nodes.Expr = nodes.Const(None)
        keywords: list[nodes.Pair] = []
        account: nodes.Expr = nodes.Const(None)
        seen_mapping = False
        while parser.stream.skip_if("comma"):
            if parser.stream.current.type == "name" and parser.stream.look().type == "assign":
                key = next(parser.stream).value
                next(parser.stream)  # the "="
                value = parser.parse_expression()
                if key == "account":
                    account = value
                else:
                    keywords.append(nodes.Pair(nodes.Const(key), value, lineno=lineno))
            elif seen_mapping or keywords:
                parser.fail(
                    "journy_event takes a name, then at most one metadata mapping, then keyword arguments: "
                    '{% journy_event "opened_billing", {"plan": "pro"}, account=team %}',
                    lineno,
                )
            else:
                metadata = parser.parse_expression()
                seen_mapping = True
        call = self.call_method(
            "_render",
            [nodes.ContextReference(), name, metadata, nodes.Dict(keywords, lineno=lineno), account],
            lineno=lineno,
        )
        return nodes.Output([call], lineno=lineno)

    @staticmethod
    def _render(
        context: Context, name: Any, metadata: Mapping[str, object] | None, keywords: dict[str, object], account: Any
    ) -> Markup:
        if keywords:
            if metadata is None:
                metadata = keywords
            elif isinstance(metadata, Mapping):
                metadata = {**metadata, **keywords}
            # else: journy_event() says the metadata is not a mapping
        return journy_event(context, name, metadata, account=account)
