"""How an app's object (a user, a team) becomes journy.io properties, from a setting.

A setting may be:

- a list of attribute names: ``["first_name", "last_name", "plan"]`` (sent under the same names);
- a dict of journy.io name to attribute: ``{"registered_at": "date_joined", "full_name": "get_full_name"}``;
  an attribute may be dotted (``"profile.plan"``), and a method is called with no arguments;
- a callable (or the dotted path of one) taking the object and returning the properties dict.

Unset, the properties are :data:`DEFAULT_USER_PROPERTIES` / :data:`DEFAULT_ACCOUNT_PROPERTIES`, those the model has
(:func:`property_map`). Both adapters use these; :func:`read_text` reads an email or a domain the same way in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter, itemgetter
from typing import Any

from .errors import ConfigurationError
from .importing import resolve_callable
from .values import domain_problem, email_problem

logger = logging.getLogger("journy")

__all__ = [
    "DEFAULT_ACCOUNT_PROPERTIES",
    "DEFAULT_USER_PROPERTIES",
    "PropertyMap",
    "PropertyValues",
    "check_named_attribute",
    "default_spec",
    "identifier",
    "property_map",
    "read_attribute",
    "read_domain",
    "read_email",
    "read_identity",
    "read_text",
]

#: With ``USER_PROPERTIES`` unset: journy.io property name -> the attributes to read it from, the first the model has.
#: These are the names journy.io forwards to CRMs.
DEFAULT_USER_PROPERTIES: dict[str, tuple[str, ...]] = {
    "full_name": ("full_name", "get_full_name", "name", "display_name"),
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "phone": ("phone",),
    "registered_at": ("registered_at", "created_at", "date_joined", "created"),
}
#: The same for accounts (``ACCOUNT_PROPERTIES`` unset).
DEFAULT_ACCOUNT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "name": ("name", "title"),
    "plan": ("plan",),
    "mrr": ("mrr",),
    "registered_at": ("registered_at", "created_at", "created"),
}


#: Property values as a snippet's cache key holds them: ``(name, type, value)`` per property, in the map's order
#: (``7``, ``7.0`` and ``True`` are equal to Python but not the same JSON). Hashable when the values are.
PropertyValues = tuple[tuple[str, type, Any], ...]


def read_attribute(obj: object, path: str) -> Any:
    """``obj.a.b`` for ``"a.b"``; a method found on the way is called with no arguments; a missing link is None."""
    value: Any = obj
    for name in path.split("."):
        if value is None:
            return None
        value = getattr(value, name)
        if callable(value) and not isinstance(value, type):
            value = value()
    return value


def _attribute_spec(spec: object, setting: str) -> dict[str, str]:
    """A list or dict property setting as ``{journy.io name: attribute path}``, checked."""
    if isinstance(spec, Mapping):
        for name, attribute in spec.items():
            if not isinstance(name, str) or not name or not isinstance(attribute, str) or not attribute:
                raise ConfigurationError(
                    f"{setting} maps journy.io property names to attribute names (both non-empty strings); "
                    f"got {name!r}: {attribute!r}."
                )
        return dict(spec)
    if isinstance(spec, Iterable):
        names = list(spec)
        if not all(isinstance(name, str) and name for name in names):
            raise ConfigurationError(f"{setting} must list attribute names as non-empty strings; got {names!r}.")
        return {name: name for name in names}
    raise ConfigurationError(
        f"{setting} must be a list of attribute names, a dict of journy.io name to attribute, or a "
        f"callable (or its dotted path); got {type(spec).__name__}."
    )


class PropertyMap:
    """Properties of an object, as a setting describes them. ``fields`` are the attribute names read (None for a
    callable), so that a save touching none of them can be skipped."""

    def __init__(self, spec: object, setting: str) -> None:
        self.setting = setting
        self._function: Callable[[Any], object] | None = None
        self._attributes: dict[str, str] = {}
        if isinstance(spec, str) or callable(spec):
            self._function = resolve_callable(spec, setting)
        else:
            self._attributes = _attribute_spec(spec, setting)
        # Read on every page (the snippet's cache key) and every save: plain attribute names are read by one
        # attrgetter, in C; dotted paths by read_attribute().
        self._names = tuple(self._attributes)
        self._paths = paths = tuple(self._attributes.values())
        self._getter: Callable[[Any], Any] | None = None
        self._dict_getter: Callable[[Any], Any] | None = None
        if paths and not any("." in path for path in paths):
            getter = attrgetter(*paths)
            self._getter = getter if len(paths) > 1 else lambda obj: (getter(obj),)

    def read_instance_dict(self) -> None:
        """Read plain attribute names from the object's ``__dict__`` first, through the attributes only when one
        is missing there. For a model whose instances keep each loaded attribute's value in ``__dict__`` under its
        own name, as SQLAlchemy's mapped attributes do (``InstanceState.dict``): its attributes are Python
        descriptors, a call each, and the snippet reads them on every page; the dict is one C-level lookup. The
        adapter calls this only for such a model and names it knows are mapped attributes."""
        if self._getter is not None:
            getter = itemgetter(*self._paths)
            self._dict_getter = getter if len(self._paths) > 1 else lambda found: (getter(found),)

    @property
    def instance_dict_paths(self) -> tuple[str, ...] | None:
        """The attribute names read from the instance's ``__dict__``, in the map's order, after
        :meth:`read_instance_dict`; None before, or for a map that reads otherwise."""
        return self._paths if self._dict_getter is not None else None

    @property
    def paths(self) -> frozenset[str]:
        """The attribute paths read (none for a callable)."""
        return frozenset(self._paths)

    @property
    def fields(self) -> frozenset[str] | None:
        """The first attribute of each path read, or None when a callable decides."""
        if self._function is not None:
            return None
        return frozenset(path.split(".", 1)[0] for path in self._attributes.values())

    def missing_on(self, model: type) -> list[str]:
        """The attributes this map reads that ``model`` (the class) does not have: the first name of each path.

        Django fields and relations, SQLAlchemy columns and relationships, properties and methods are all class
        attributes, so this finds a misspelt name at start-up instead of at the first save. A callable map reads
        what it likes: nothing to check.
        """
        if self._function is not None:
            return []
        firsts = dict.fromkeys(path.split(".", 1)[0] for path in self._attributes.values())
        return [name for name in firsts if not hasattr(model, name)]

    def check_against(self, model: type) -> None:
        """Raise :class:`ConfigurationError` naming the setting, the model and each attribute it does not have."""
        missing = self.missing_on(model)
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise ConfigurationError(
                f"{self.setting} reads {names}, which {model.__module__}.{model.__qualname__} does not have: "
                "correct the attribute name, or map the property with a callable."
            )

    def __call__(self, obj: object) -> dict[str, object]:
        if self._function is not None:
            found = self._function(obj)
            if found is None:
                return {}
            if not isinstance(found, Mapping):
                raise ConfigurationError(f"{self.setting} returned {type(found).__name__}, not a dict of properties.")
            return dict(found)
        if self._getter is None:
            return {name: read_attribute(obj, path) for name, path in self._attributes.items()}
        return dict(zip(self._names, self._plain_values(obj), strict=True))

    def values(self, obj: object) -> PropertyValues:
        """What ``self(obj)`` returns, as :data:`PropertyValues`, without the dict for a map of plain names: the
        snippet's cache key, read on every page.

        >>> PropertyMap({"seats": "seats", "plan": "plan"}, "PROPS").values(type("Team", (), {"seats": 7, "plan": "7"}))
        (('seats', <class 'int'>, 7), ('plan', <class 'str'>, '7'))
        """
        if self._getter is None:
            found = self(obj)
            values: Any = found.values()
            return tuple(zip(found.keys(), map(type, values), values, strict=True))
        values = self._plain_values(obj)
        return tuple(zip(self._names, map(type, values), values, strict=True))  # no Python loop: on every page

    def _plain_values(self, obj: object) -> Any:
        """The values of a map of plain names, in order: from ``__dict__`` after :meth:`read_instance_dict`, else
        (or for a value not there) through the attributes; a method is called, as read_attribute() does."""
        values = None
        if self._dict_getter is not None:
            try:
                values = self._dict_getter(obj.__dict__)
            except (KeyError, AttributeError):  # expired or deferred (or no __dict__): the attribute loads it
                values = None
        if values is None:
            assert self._getter is not None  # a map of plain names
            values = self._getter(obj)
        if any(map(callable, values)):  # a method (get_full_name) is called
            values = [value() if callable(value) and not isinstance(value, type) else value for value in values]
        return values

    def __repr__(self) -> str:
        shown = getattr(self._function, "__qualname__", None) or self._attributes
        return f"<PropertyMap {self.setting}={shown!r}>"


def default_spec(model: type, defaults: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """The property map of ``defaults`` that ``model`` can fill: each name from the first attribute it has."""
    spec: dict[str, str] = {}
    for name, candidates in defaults.items():
        attribute = next((candidate for candidate in candidates if hasattr(model, candidate)), None)
        if attribute is not None:
            spec[name] = attribute
    return spec


def property_map(
    spec: object, setting: str, model: type | None, defaults: Mapping[str, tuple[str, ...]], *, check: bool = True
) -> PropertyMap | None:
    """The :class:`PropertyMap` of a ``*_PROPERTIES`` setting for ``model``: ``spec``, or the defaults the model has
    when it is None (None without a model). With ``check``, an attribute the model lacks is a
    :class:`ConfigurationError` naming the setting, the model and the attribute: the mistake shows at start-up."""
    if spec is None:
        if model is None:
            return None
        spec = default_spec(model, defaults)
    mapping = PropertyMap(spec, setting)
    if check and model is not None:
        mapping.check_against(model)
    return mapping


def check_named_attribute(model: type | None, name: object, setting: str) -> None:
    """Raise :class:`ConfigurationError` when ``name``, what a setting such as ``ACCOUNT_DOMAIN_FIELD`` names (an
    attribute or a dotted path), starts with an attribute ``model`` (the class) does not have. Read at run time, such
    a name would quietly leave the value out of every call; a callable, or no model, is not checked.

    >>> check_named_attribute(type("Team", (), {"site": ""}), "website", "DOMAIN")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    journy_core.errors.ConfigurationError: DOMAIN='website': journy_core.mapping.Team does not have 'website': ...
    """
    if model is None or not isinstance(name, str) or not name:
        return
    first = name.split(".", 1)[0]
    if not hasattr(model, first):
        raise ConfigurationError(
            f"{setting}={name!r}: {model.__module__}.{model.__qualname__} does not have {first!r}: correct the "
            "attribute name."
        )


def read_text(obj: object, attribute: str | None) -> str | None:
    """The stripped string ``obj.<attribute>`` (an email, a domain); None when unset, blank or not a string."""
    if attribute is None:
        return None
    value = read_attribute(obj, attribute) if "." in attribute else getattr(obj, attribute, None)
    if isinstance(value, str):
        value = value.strip()
        if value:
            return value
    return None


def read_email(obj: object, attribute: str | None) -> str | None:
    """:func:`read_text`, kept only when it is an email address journy.io takes (:func:`~journy_core.values.
    email_problem`). An invalid one is left out with a warning naming the model, the object's ID and the reason:
    the object is still synced by its ID, since its owner cannot fix the data before the next save."""
    return _valid(obj, attribute, read_text(obj, attribute), email_problem, "an email address")


def read_domain(obj: object, attribute: str | None) -> str | None:
    """:func:`read_text`, kept only when it is a domain name journy.io takes; otherwise as :func:`read_email`."""
    return _valid(obj, attribute, read_text(obj, attribute), domain_problem, "a domain name")


def _valid(
    obj: object, attribute: str | None, value: str | None, problem_of: Callable[[str], str | None], what: str
) -> str | None:
    problem = None if value is None else problem_of(value)
    if problem is None:
        return value
    # The value itself stays out of the log: it is personal data, and the reason says what is wrong with it.
    logger.warning(
        "journy: %s %s: its %s is not %s (%s); left out, the object is synced by its ID",
        type(obj).__name__,
        getattr(obj, "pk", getattr(obj, "id", "?")),
        attribute,
        what,
        problem,
    )
    return None


def identifier(value: object) -> str | None:
    """``value`` as the ID journy.io takes (a string); None for None and for booleans (never a real ID)."""
    if value is None or value is True or value is False:
        return None
    return value if type(value) is str else str(value)


def read_identity(obj: object, spec: str | Callable[[Any], object]) -> str | None:
    """The ID ``USER_ID`` / ``ACCOUNT_ID`` reads from ``obj``: an attribute (dotted path) or a callable's answer."""
    return identifier(read_attribute(obj, spec) if isinstance(spec, str) else spec(obj))
