# mypy: disable-error-code="import-untyped"
"""How the app's users and accounts become journy.io identities, properties and operations.

Resolved from the settings on first use and cached until the settings change: the account model, the property
maps, and the members relation (the many-to-many whose ``m2m_changed`` becomes membership calls).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models

from journy_core import operations as ops
from journy_core.errors import ConfigurationError
from journy_core.filters import may_leave_out
from journy_core.filters import should_sync as core_should_sync
from journy_core.importing import resolve_callable
from journy_core.mapping import (
    DEFAULT_ACCOUNT_PROPERTIES,
    DEFAULT_USER_PROPERTIES,
    PropertyMap,
    property_map,
    read_domain,
    read_email,
    read_text,
)
from journy_core.operations import Operation
from journy_core.soft_delete import SoftDelete, is_soft_deleted, soft_delete_rule

from .conf import JournyConfigurationError, cached, journy_settings

__all__ = [
    "MembersRelation",
    "account_identity",
    "account_model",
    "is_account",
    "is_user",
    "kept_for_memberships",
    "members_relation",
    "save_operation",
    "soft_deleted",
    "synced_fields",
    "upsert_operation",
    "user_identity",
]


def account_model() -> type[models.Model] | None:
    """The model named by ``JOURNY["ACCOUNT_MODEL"]``, or None when the app has no accounts."""

    def resolve() -> type[models.Model] | None:
        label = journy_settings()["ACCOUNT_MODEL"]
        if label is None:
            return None
        try:
            model: type[models.Model] = apps.get_model(label)
        except (ValueError, LookupError) as exc:
            raise JournyConfigurationError(
                f"JOURNY['ACCOUNT_MODEL']={label!r} is not an installed model ({exc}); use 'app_label.ModelName', "
                "e.g. 'teams.Organization'."
            ) from None
        return model

    found: type[models.Model] | None = cached("account_model", resolve)
    return found


def _property_map(key: str, model: type[models.Model], defaults: Mapping[str, tuple[str, ...]]) -> PropertyMap:
    try:
        found = property_map(journy_settings()[key], f"JOURNY[{key!r}]", model, defaults, check=False)
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None
    assert found is not None  # a model is given
    return found


def user_properties() -> PropertyMap:
    found: PropertyMap = cached(
        "user_properties", lambda: _property_map("USER_PROPERTIES", get_user_model(), DEFAULT_USER_PROPERTIES)
    )
    return found


def account_properties() -> PropertyMap | None:
    model = account_model()
    if model is None:
        return None
    found: PropertyMap = cached(
        "account_properties", lambda: _property_map("ACCOUNT_PROPERTIES", model, DEFAULT_ACCOUNT_PROPERTIES)
    )
    return found


def _soft_delete(key: str, model: type[models.Model] | None) -> SoftDelete | None:
    try:
        return soft_delete_rule(journy_settings()[key], f"JOURNY[{key!r}]", model)
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None


def user_soft_delete() -> SoftDelete | None:
    """How ``JOURNY["USER_DELETED"]`` tells a soft-deleted user (None: unset)."""
    found: SoftDelete | None = cached("user_deleted", lambda: _soft_delete("USER_DELETED", get_user_model()))
    return found


def account_soft_delete() -> SoftDelete | None:
    """How ``JOURNY["ACCOUNT_DELETED"]`` tells a soft-deleted account (None: unset, or no account model)."""
    found: SoftDelete | None = cached("account_deleted", lambda: _soft_delete("ACCOUNT_DELETED", account_model()))
    return found


def soft_deleted(obj: object) -> bool:
    """Whether a user or account instance is soft-deleted (``USER_DELETED`` / ``ACCOUNT_DELETED``)."""
    if is_user(obj):
        return is_soft_deleted(user_soft_delete(), obj)
    return is_account(obj) and is_soft_deleted(account_soft_delete(), obj)


def kept_for_memberships(of_users: bool, pks: set[Any], using: str | None, *, adding: bool = True) -> set[Any]:
    """The primary keys among ``pks`` (of users, or of accounts) whose objects a membership call may name: synced
    (``SHOULD_SYNC``, ``journy_should_sync()``, and for users ``SYNC_USERS`` and ``SKIP_STAFF``: a user never sent is
    not added to an account either, as Flask's session events decide), and for an addition not soft-deleted (it
    would bring them back in journy.io). For a membership changed from the other side (``user.organizations.add``),
    where the signal carries these objects by primary key alone: one query on ``using``, and only when a rule can
    leave one out."""
    model = get_user_model() if of_users else account_model()
    if model is None or not pks:
        return pks
    config = journy_settings()
    rule = (user_soft_delete() if of_users else account_soft_delete()) if adding else None
    if rule is None and not may_leave_out(config, model, is_user=of_users):
        return pks
    # The base manager: a default manager that hides some rows (inactive users, say) must not drop their memberships.
    found = model._base_manager.using(using).filter(pk__in=pks)
    return {
        obj.pk
        for obj in found
        if not (rule is not None and is_soft_deleted(rule, obj)) and core_should_sync(config, obj, is_user=of_users)
    }


def is_user(obj: object) -> bool:
    return isinstance(obj, get_user_model())


def is_account(obj: object) -> bool:
    model = account_model()
    return model is not None and isinstance(obj, model)


_EMAIL_FIELDS: dict[type[models.Model], str] = {}


def _email_field(user_model: type[models.Model]) -> str:
    try:
        return _EMAIL_FIELDS[user_model]
    except KeyError:
        getter = getattr(user_model, "get_email_field_name", None)
        name = _EMAIL_FIELDS[user_model] = str(getter()) if callable(getter) else "email"
        return name


def user_identity(user: Any) -> dict[str, Any]:
    """``{"user_id": ..., "email": ...}`` of a user instance, or ``{"user_id": ...}`` of an ID."""
    if not isinstance(user, models.Model):
        return {"user_id": user}
    ident: dict[str, Any] = {"user_id": user.pk}
    email = read_email(user, _email_field(type(user)))  # an invalid address is left out, with a warning
    if email is not None:
        ident["email"] = email
    return ident


def user_email(user: models.Model) -> str | None:
    """The user instance's email, stripped; None when it has none."""
    return read_text(user, _email_field(type(user)))


def account_identity(account: Any) -> dict[str, Any]:
    """``{"account_id": ..., "domain": ...}`` of an account instance, or ``{"account_id": ...}`` of an ID."""
    if not isinstance(account, models.Model):
        return {"account_id": account}
    ident: dict[str, Any] = {"account_id": account.pk}
    domain = read_domain(account, journy_settings().account_domain_field)  # an invalid domain is left out
    if domain is not None:
        ident["domain"] = domain
    return ident


def synced_fields(model: type[models.Model]) -> frozenset[str] | None:
    """The fields whose change is worth an upsert (None: any save), for skipping ``update_fields`` saves."""
    if model is get_user_model() or issubclass(model, get_user_model()):
        fields = user_properties().fields
        extra = {_email_field(model)}
        deleted = user_soft_delete()
    else:
        account_map = account_properties()
        fields = account_map.fields if account_map is not None else frozenset()
        domain_field = journy_settings()["ACCOUNT_DOMAIN_FIELD"]
        extra = {domain_field} if domain_field else set()
        deleted = account_soft_delete()
    if deleted is not None:
        if deleted.fields is None:
            return None  # a callable decides: any field may delete or restore
        extra |= deleted.fields
    if fields is None:
        return None
    # update_fields holds field names and attnames (owner and owner_id); compare both.
    names = set(fields) | extra
    for name in list(names):
        try:
            names.add(model._meta.get_field(name).attname)
        except Exception:  # a method or a property, not a field  # noqa: S112
            continue
    return frozenset(names)


def upsert_operation(obj: models.Model) -> Operation:
    """The upsert of a user or account instance, with its properties as the settings map them."""
    if is_user(obj):
        return ops.upsert_user(**user_identity(obj), properties=user_properties()(obj))
    account_map = account_properties()
    if account_map is None or not is_account(obj):
        raise JournyConfigurationError(
            f"{type(obj).__name__} is neither the user model nor JOURNY['ACCOUNT_MODEL'], so it cannot be synced."
        )
    return ops.upsert_account(**account_identity(obj), properties=account_map(obj))


def save_operation(obj: models.Model) -> Operation:
    """What a save of a user or account sends: its delete when it is soft-deleted, else its upsert."""
    if soft_deleted(obj):
        return delete_operation(obj, obj.pk)
    return upsert_operation(obj)


def delete_operation(obj: models.Model, pk: Any) -> Operation:
    """The delete of a user or account whose primary key was ``pk`` (deleted instances lose theirs)."""
    if is_user(obj):
        return ops.delete_user(user_id=pk)
    return ops.delete_account(account_id=pk)


@dataclass(frozen=True)
class MembersRelation:
    """The many-to-many between accounts and users: its through model and the through's two foreign keys."""

    through: type[models.Model]
    account_attname: str
    user_attname: str
    accessor: str  # on the account instance: account.<accessor>.all() are its members


def members_relation() -> MembersRelation | None:
    """The relation ``JOURNY["ACCOUNT_MEMBERS"]`` names, or None (no setting, or a callable)."""

    def resolve() -> MembersRelation | None:
        name = journy_settings()["ACCOUNT_MEMBERS"]
        model = account_model()
        if name is None or model is None or not isinstance(name, str) or "." in name:
            return None
        try:
            field = model._meta.get_field(name)
        except Exception:
            raise JournyConfigurationError(
                f"JOURNY['ACCOUNT_MEMBERS']={name!r}: {model._meta.label} has no field {name!r}; name its "
                "many-to-many to the user model (e.g. 'members'), or give a callable(account) -> users."
            ) from None
        user_model = get_user_model()
        if not field.many_to_many or field.related_model is not user_model:
            raise JournyConfigurationError(
                f"JOURNY['ACCOUNT_MEMBERS']={name!r} is not a many-to-many between {model._meta.label} and "
                f"{user_model._meta.label}."
            )
        if isinstance(field, models.ManyToManyField):  # declared on the account model
            forward, account_side = field, True
        else:  # declared on the user model, reached through its related_name
            forward, account_side = field.field, False
        through = forward.remote_field.through
        source = through._meta.get_field(forward.m2m_field_name()).attname
        target = through._meta.get_field(forward.m2m_reverse_field_name()).attname
        account_attname, user_attname = (source, target) if account_side else (target, source)
        return MembersRelation(through, account_attname, user_attname, name)

    found: MembersRelation | None = cached("members_relation", resolve)
    return found


def members_of(account: models.Model) -> Iterable[Any]:
    """The users (or user IDs) of an account, by the relation or the callable ``ACCOUNT_MEMBERS`` names."""
    spec = journy_settings()["ACCOUNT_MEMBERS"]
    if spec is None:
        return []
    relation = members_relation()
    if relation is not None:
        user_ids: Iterable[Any] = (
            relation.through._default_manager.using(account._state.db)
            .filter(**{relation.account_attname: account.pk})
            .values_list(relation.user_attname, flat=True)
        )
        return user_ids
    try:
        function = resolve_callable(spec, "JOURNY['ACCOUNT_MEMBERS']")
    except ConfigurationError as exc:
        raise JournyConfigurationError(str(exc)) from None
    found: Iterable[Any] = function(account)
    return found


def member_id(user: Any) -> Any:
    return user.pk if isinstance(user, models.Model) else user
