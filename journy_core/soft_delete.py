"""Soft deletion: a user or account that the app marks deleted, and keeps, is deleted in journy.io.

``USER_DELETED`` / ``ACCOUNT_DELETED`` say how to tell. Each may be:

- an attribute of the model, or a dotted path from it, whose truthy value means deleted: ``"deleted_at"`` (a
  datetime, or None while the object lives), ``"is_deleted"``, ``"profile.closed_at"``; a method is called;
- a callable ``(obj) -> bool``, or its dotted path (``"myapp.journy.is_deleted"``).

A dotted string is read as an attribute path when its first name is an attribute of the model, and as the path of
a callable otherwise: the model's own names win, so ``"profile.closed_at"`` is never taken for a module.

Both adapters build one :class:`SoftDelete` per model when they start (a name the model lacks is a
:class:`~journy_core.ConfigurationError` then, not at the first save) and ask :func:`is_soft_deleted` wherever an
object becomes a call: at each commit that saves it, in the bulk sync and in an explicit ``sync(obj)``. A deleted
object becomes ``delete_user`` / ``delete_account`` instead of an upsert, and its memberships are not sent as adds;
once the attribute is false again (the object restored), the next save upserts it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError
from .importing import resolve_callable
from .mapping import read_attribute

__all__ = ["SoftDelete", "is_soft_deleted", "soft_delete_rule"]


def _model_name(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"


class SoftDelete:
    """Whether an object of one model is soft-deleted, as the setting ``setting`` says: ``rule(obj) -> bool``.

    ``model`` (the class) decides what a dotted string is and checks an attribute name against it; without a model
    a string is an attribute path, read on the instance.
    """

    def __init__(self, spec: object, setting: str, model: type | None = None) -> None:
        self.setting = setting
        self._function: Callable[[Any], object] | None = None
        self._path: str | None = None
        if isinstance(spec, str):
            self._path, self._function = self._resolve(spec.strip(), model)
        elif callable(spec):
            self._function = spec
        else:
            raise ConfigurationError(
                f"{setting} must be an attribute name (such as 'deleted_at'), a callable(obj) -> bool, or its "
                f"dotted path; got {spec!r}."
            )

    def _resolve(self, spec: str, model: type | None) -> tuple[str | None, Callable[[Any], object] | None]:
        if not spec:
            raise ConfigurationError(f"{self.setting} must not be blank: name the attribute that marks a deletion.")
        first = spec.split(".", 1)[0]
        if model is None or hasattr(model, first):
            return spec, None
        if "." not in spec:
            raise ConfigurationError(
                f"{self.setting}={spec!r}: {_model_name(model)} has no attribute {first!r}; name a field, property "
                "or method whose truthy value means deleted, or give a callable(obj) -> bool."
            )
        try:
            return None, resolve_callable(spec, self.setting)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{self.setting}={spec!r} is neither an attribute of {_model_name(model)} (it has no {first!r}) nor "
                f"the dotted path of a callable ({exc})"
            ) from None

    @property
    def fields(self) -> frozenset[str] | None:
        """The attribute whose change may restore or delete (the first name of the path); None for a callable,
        which may read anything."""
        if self._path is None:
            return None
        return frozenset({self._path.split(".", 1)[0]})

    def __call__(self, obj: object) -> bool:
        """Whether ``obj`` is soft-deleted now."""
        if self._function is not None:
            return bool(self._function(obj))
        assert self._path is not None
        return bool(read_attribute(obj, self._path))

    def __repr__(self) -> str:
        shown = self._path if self._path is not None else getattr(self._function, "__qualname__", self._function)
        return f"<SoftDelete {self.setting}={shown!r}>"


def soft_delete_rule(spec: object, setting: str, model: type | None) -> SoftDelete | None:
    """The :class:`SoftDelete` of a ``*_DELETED`` setting for ``model``; None when the setting is unset (nothing is
    ever soft-deleted). Raises :class:`~journy_core.ConfigurationError` naming the setting, and the model's missing
    attribute."""
    if spec is None:
        return None
    if isinstance(spec, SoftDelete):
        return spec
    return SoftDelete(spec, setting, model)


def is_soft_deleted(rule: object, obj: object) -> bool:
    """Whether ``obj`` is soft-deleted by ``rule``: a :class:`SoftDelete`, or a setting's raw value (an attribute
    path or a callable); None (no setting) never is. The one answer both adapters use."""
    if rule is None:
        return False
    if isinstance(rule, str):
        return bool(read_attribute(obj, rule))
    if callable(rule):
        return bool(rule(obj))
    raise ConfigurationError(f"a soft-delete rule must be an attribute path or a callable; got {rule!r}.")
