"""The snippet cache's key for a page whose user and account are SQLAlchemy model instances: their fingerprint.

The snippet names the user (ID, email, properties) and the account (ID, properties). Making that identity from a
model instance reads each attribute through SQLAlchemy's descriptors and builds the typed values of
:class:`~journy_core.page.PageIdentity`, on every page, although the same user on the same account gets the same
HTML. A fingerprint is what that identity is made of, read in one step: the instance's identity key (its class and
primary key, ``InstanceState.key``) and the raw values of the email and property attributes, from the instance's
``__dict__``, where SQLAlchemy keeps the loaded value of each mapped attribute (``InstanceState.dict``), with their
types. The identity is a function of it, so :meth:`~journy_core.page.SnippetCache.render_by` makes the identity
only when the page is not cached.

Only where that holds: the exact user or account model class, mapped, with the default ID (the primary key), the
email and every property a mapped column or relationship of that class, read by name. Anything else (an ID or
property callable, a dotted path, a subclass, a pending instance without a primary key yet, a value not loaded, an
account given as an ID) has no fingerprint, and the page's identity is made the usual way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from journy_core.mapping import PropertyMap

from .settings import Settings, mapped_attribute_names

try:
    from sqlalchemy.orm.attributes import instance_state

    HAS_SQLALCHEMY = True
except ImportError:  # SQLAlchemy is optional: without it, no model has a fingerprint
    HAS_SQLALCHEMY = False

__all__ = ["page_fingerprint"]

#: Reads one instance's fingerprint; raises KeyError when it has none (see the module).
Reader = Callable[[Any], tuple[object, ...]]

# id(settings) -> (user reader, account reader): built once per settings object, the entry dropped when that object
# is collected (so that its id, then free for reuse, never finds another's readers).
_readers: dict[int, tuple[Reader | None, Reader | None]] = {}


def page_fingerprint(settings: Settings, user: Any, account: Any) -> tuple[object, ...] | None:
    """The fingerprint of a page's ``user`` (logged in, or None) and ``account`` (or None), or None when either
    has none."""
    found = _readers.get(id(settings))
    if found is None:
        found = _readers[id(settings)] = _build(settings)
        weakref.finalize(settings, _readers.pop, id(settings), None)
    read_user, read_account = found
    try:
        if user is None:
            user_part = None
        elif read_user is not None and type(user) is settings.user_model:
            user_part = read_user(user)
        else:
            return None
        if account is None:
            return (user_part, None)
        if read_account is not None and type(account) is settings.account_model:
            return (user_part, read_account(account))
    except KeyError:  # not loaded, or no primary key yet
        pass
    return None


def _build(settings: Settings) -> tuple[Reader | None, Reader | None]:
    properties = settings.snippet_properties
    user = _reader(settings.user_model, settings.user_id, settings.user_email, settings.user_properties, properties)
    account = _reader(settings.account_model, settings.account_id, None, settings.account_properties, properties)
    return user, account


def _reader(
    model: Any, id_spec: object, email: str | None, prop_map: PropertyMap | None, with_properties: bool
) -> Reader | None:
    """The fingerprint reader of ``model``'s instances, or None when the module's conditions do not hold."""
    stored = mapped_attribute_names(model) if HAS_SQLALCHEMY and model is not None and id_spec is None else None
    if stored is None:  # no model, an ID callable, or not mapped
        return None
    names: list[str] = []
    if email is not None:
        if email not in stored:
            return None
        names.append(email)
    if with_properties and prop_map is not None:
        paths = prop_map.instance_dict_paths
        if paths is None:
            return None
        names.extend(paths)
    return _dict_reader(tuple(names))


def _dict_reader(names: tuple[str, ...]) -> Reader:
    getter = itemgetter(*names) if len(names) > 1 else (lambda found: (found[names[0]],)) if names else None

    def read(obj: Any) -> tuple[object, ...]:
        key = instance_state(obj).key
        if key is None:
            raise KeyError("no primary key yet")
        values = getter(obj.__dict__) if getter is not None else ()
        if any(map(callable, values)):  # the identity would call it: made the usual way
            raise KeyError("a callable value")
        return (key, values, tuple(map(type, values)))

    return read
