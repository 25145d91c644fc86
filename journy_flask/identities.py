"""How the app's objects become journy.io identities and operations: a user or an account (a SQLAlchemy model
instance, a Flask-Login user, or a bare ID) to ``user_id`` / ``account_id``, and to ``upsert`` / ``delete``.

Shared by the session hooks, ``journy.sync(obj)``, ``journy.track(...)``, the snippet and ``flask journy sync``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from journy_core import operations as ops
from journy_core.filters import should_sync
from journy_core.mapping import identifier, read_domain, read_email, read_identity
from journy_core.operations import Operation
from journy_core.soft_delete import is_soft_deleted, soft_delete_rule

from .settings import Identity, Settings

try:
    from sqlalchemy.orm.attributes import instance_state

    HAS_SQLALCHEMY = True
except ImportError:  # SQLAlchemy is optional
    HAS_SQLALCHEMY = False

try:
    from flask_login import AnonymousUserMixin, UserMixin
except ImportError:  # Flask-Login is optional
    AnonymousUserMixin = UserMixin = None

__all__ = [
    "account_id_of",
    "account_operation",
    "is_account",
    "is_user",
    "member_ids",
    "resolve_soft_deletes",
    "soft_deleted",
    "user_id_of",
    "user_operation",
]

_PLAIN_IDS = (str, int, uuid.UUID)


def _primary_key(obj: Any) -> object:
    """The single-column primary key of a mapped instance, without loading anything."""
    state = instance_state(obj)  # what sqlalchemy.inspect(obj) returns, without the inspection registry
    # InstanceState.key, the identity key (class, primary key tuple, token): what its identity property reads,
    # without that property's call on every page.
    key = state.key
    if key is not None:
        identity = key[1]
        return identity[0] if len(identity) == 1 else ":".join(str(v) for v in identity)
    values = state.mapper.primary_key_from_instance(obj)
    if len(values) != 1:
        return ":".join(str(v) for v in values) if all(v is not None for v in values) else None
    return values[0]


def _get_id(obj: Any) -> object:
    return obj.get_id()


#: ``obj.id``: Flask-Login's own ``UserMixin.get_id()`` is ``str(self.id)``, and an object without ``get_id`` is
#: identified by its ``id`` (None when it has none). A C-level getter: the snippet reads two IDs on every page.
_read_id = attrgetter("id")

# How to read the default identifier of each class: resolved once per class, since this runs on every page.
_default_readers: dict[type, Callable[[Any], object]] = {}


def _default_reader(cls: type) -> Callable[[Any], object]:
    reader = _default_readers.get(cls)
    if reader is None:
        if HAS_SQLALCHEMY and getattr(cls, "__mapper__", None) is not None:
            reader = _primary_key
        elif callable(getattr(cls, "get_id", None)) and getattr(cls, "get_id", None) is not _USER_MIXIN_GET_ID:
            reader = _get_id  # a Flask-Login user with its own get_id(), not a mapped model
        else:
            reader = _read_id
        _default_readers[cls] = reader
    return reader


_USER_MIXIN_GET_ID = getattr(UserMixin, "get_id", None)

#: Whether a user class is always (True) or never (False) authenticated: Flask-Login's ``UserMixin`` (whose
#: ``is_authenticated`` is ``is_active``, True unless overridden) and ``AnonymousUserMixin``. A class that overrides
#: either property is asked every time (None). Resolved once per class: the snippet asks on every page.
_authenticated_by_class: dict[type, bool | None] = {}


def _fixed_authentication(cls: type) -> bool | None:
    if UserMixin is None:
        return None
    attributes = ("is_authenticated", "is_active")
    if all(getattr(cls, name, None) is UserMixin.__dict__[name] for name in attributes):
        return True
    if getattr(cls, "is_authenticated", None) is AnonymousUserMixin.__dict__["is_authenticated"]:
        return False
    return None


def is_authenticated(user: Any) -> bool:
    """``user.is_authenticated``, answered from the class for Flask-Login's mixins (without two property calls)."""
    cls = type(user)
    try:
        fixed = _authenticated_by_class[cls]
    except KeyError:
        fixed = _authenticated_by_class[cls] = _fixed_authentication(cls)
    if fixed is not None:
        return fixed
    return bool(getattr(user, "is_authenticated", False))


def _identify(obj: Any, spec: Identity) -> str | None:
    if spec is None:
        # The usual case, a class seen before: only _default_reader() fills the table, for classes that passed the
        # checks below (never None, a bool or a plain ID), so a hit skips them.
        known = _default_readers.get(type(obj))
        if known is not None:
            try:
                value = known(obj)
            except AttributeError:
                if known is not _read_id:
                    raise
                return None  # no ``id`` attribute
            # identifier(), without its call on every page: a plain ID is a str or an int
            return value if type(value) is str else (str(value) if type(value) is int else identifier(value))
    if obj is None or obj is True or obj is False:
        return None
    if isinstance(obj, _PLAIN_IDS):
        return str(obj)
    if spec is not None:
        return read_identity(obj, spec)
    reader = _default_readers.get(type(obj)) or _default_reader(type(obj))
    try:
        return identifier(reader(obj))
    except AttributeError:
        if reader is not _read_id:
            raise
        return None  # no ``id`` attribute


def user_id_of(settings: Settings, user: Any, *, authenticated: bool = False) -> str | None:
    """The journy.io ``user_id`` of ``user`` (an instance or an ID), or None for anonymous/unsaved users.
    ``authenticated``: the caller already knows the user is logged in."""
    if user is None or (not authenticated and getattr(user, "is_anonymous", False) is True):
        return None
    return _identify(user, settings.user_id)


def account_id_of(settings: Settings, account: Any) -> str | None:
    """The journy.io ``account_id`` of ``account`` (an instance or an ID), or None."""
    return _identify(account, settings.account_id)


def user_email_of(settings: Settings, user: Any) -> str | None:
    """The user's email (``JOURNY_USER_EMAIL``), stripped; None for an ID, a user without one, or one that is not an
    email address (left out with a warning: the user is still synced by its ID)."""
    if user is None or isinstance(user, _PLAIN_IDS):
        return None
    return read_email(user, settings.user_email)


def is_user(settings: Settings, obj: object) -> bool:
    return settings.user_model is not None and isinstance(obj, settings.user_model)


def is_account(settings: Settings, obj: object) -> bool:
    return settings.account_model is not None and isinstance(obj, settings.account_model)


def wants_sync(settings: Settings, obj: object) -> bool:
    """The per-object opt-out (:func:`journy_core.filters.should_sync`): ``journy_should_sync()`` on the model,
    ``JOURNY_SHOULD_SYNC``, ``JOURNY_SYNC_USERS`` and ``JOURNY_SKIP_STAFF``."""
    return should_sync(settings, obj, is_user=is_user(settings, obj))


def resolve_soft_deletes(settings: Settings) -> Settings:
    """``settings`` with ``JOURNY_USER_DELETED`` / ``JOURNY_ACCOUNT_DELETED`` checked against their models (an
    attribute a model lacks raises :class:`~journy_core.ConfigurationError` in ``init_app``) and resolved."""
    return dataclasses.replace(
        settings,
        user_deleted=soft_delete_rule(settings.user_deleted, "JOURNY_USER_DELETED", settings.user_model),
        account_deleted=soft_delete_rule(settings.account_deleted, "JOURNY_ACCOUNT_DELETED", settings.account_model),
    )


def soft_deleted(settings: Settings, obj: object) -> bool:
    """Whether a user or account instance is soft-deleted (``JOURNY_USER_DELETED`` / ``JOURNY_ACCOUNT_DELETED``):
    its save, its bulk sync and ``journy.sync(obj)`` send its delete."""
    if is_user(settings, obj):
        return is_soft_deleted(settings.user_deleted, obj)
    return is_account(settings, obj) and is_soft_deleted(settings.account_deleted, obj)


def user_operation(settings: Settings, user: Any, *, delete: bool = False) -> Operation | None:
    """``upsert_user`` (or ``delete_user``) for a user model instance; None when it has no ID yet."""
    user_id = user_id_of(settings, user)
    if user_id is None:
        return None
    if delete:
        return ops.delete_user(user_id=user_id)
    properties = settings.user_properties(user) if settings.user_properties is not None else None
    return ops.upsert_user(user_id=user_id, email=user_email_of(settings, user), properties=properties)


def account_operation(settings: Settings, account: Any, *, delete: bool = False) -> Operation | None:
    """``upsert_account`` (or ``delete_account``) for an account model instance."""
    account_id = account_id_of(settings, account)
    if account_id is None:
        return None
    if delete:
        return ops.delete_account(account_id=account_id)
    domain = read_domain(account, settings.account_domain_field)  # an invalid domain is left out, with a warning
    properties = settings.account_properties(account) if settings.account_properties is not None else None
    return ops.upsert_account(account_id=account_id, domain=domain, properties=properties)


def member_ids(settings: Settings, account: Any) -> list[str]:
    """The user IDs of an account's members (``JOURNY_ACCOUNT_MEMBERS``), for the bulk sync and ``sync(...,
    members=True)``; soft-deleted users left out (their delete was sent: an addition would bring them back)."""
    if settings.account_members is None:
        return []
    members = getattr(account, settings.account_members, None) or ()
    # Not a soft-deleted user, nor one the sync leaves out (SKIP_STAFF, SYNC_USERS, SHOULD_SYNC): as the session
    # events decide for a membership changed in a commit.
    kept = (user for user in members if not soft_deleted(settings, user) and wants_sync(settings, user))
    found = (user_id_of(settings, user) for user in kept)
    return [user_id for user_id in found if user_id is not None]
