"""Identity verification: the HMAC proving that a browser's ``userId`` or ``accountId`` came from the server.

journy.io refuses a logged-in user's snippet calls without a valid hash once a site turns verification on. The
hash is computed here, on every page render, with the website's identity-verification secret, which must never
reach the browser, a log line or an error message.
"""

from __future__ import annotations

import hmac
import uuid

from .errors import InvalidArgumentError
from .secrets import SecretBytes, redact
from .values import serialize_id

__all__ = ["verification_hash"]

_NOT_UNICODE = "is not valid Unicode text (it cannot be UTF-8 encoded)"


def secret_key(secret: object, argument: str = "secret") -> SecretBytes:
    """The secret as HMAC key bytes (UTF-8 for ``str``); raises naming ``argument``, never showing the value.

    Used by the snippet renderer to validate and encode the secret once per page instead of once per call. The
    key is a :class:`~journy_core.secrets.SecretBytes`, so the renderer's ``key`` variable shows redacted in a
    traceback's locals.
    """
    secret = redact(secret)  # first: a traceback through this frame shows the secret only redacted
    if isinstance(secret, str):
        try:
            key = SecretBytes(secret.encode("utf-8"))
        except UnicodeEncodeError:
            # The codec's message quotes the offending character and its position: part of the secret.
            raise InvalidArgumentError(argument, _NOT_UNICODE) from None
    elif isinstance(secret, (bytes, bytearray)):
        key = SecretBytes(secret)
    else:
        raise InvalidArgumentError(argument, f"expected a str or bytes secret, got {type(secret).__name__}")
    if not key.strip():
        raise InvalidArgumentError(
            argument,
            "is empty or blank; copy the identity-verification secret from the website settings in journy.io",
        )
    return key


def sign(key: bytes, identifier: str) -> str:
    """Lowercase hex HMAC-SHA256 of an already serialized identifier, with a key from :func:`secret_key`."""
    # hmac.digest is OpenSSL's one-shot HMAC: about twice as fast as hmac.new(...).hexdigest().
    return hmac.digest(key, identifier.encode("utf-8"), "sha256").hex()


def verification_hash(secret: str | bytes, identifier: str | int | uuid.UUID) -> str:
    """The ``verification`` value of a user or account ID: lowercase hex HMAC-SHA256 keyed with ``secret``.

    The same value as journy.io's recipes (PHP ``hash_hmac``, Node ``createHmac``, Ruby
    ``OpenSSL::HMAC.hexdigest``, Python ``hmac``): the identifier is hashed as its UTF-8 text, so ``42``,
    ``"42"`` and a UUID's ``str`` give what the browser will send.

    >>> verification_hash("secret", 42)
    '93c121e7aa437a1e01e3c512c6f0ce3c821a839025dca4408f85616de4aaee70'

    Raises :class:`~journy_core.errors.InvalidArgumentError` naming ``secret`` (blank, wrong type) or
    ``identifier`` (blank, wrong type); the secret's value is never part of the message.
    """
    secret = redact(secret)  # first: a traceback through this frame shows the secret only redacted
    key = secret_key(secret)
    text = serialize_id(identifier, "identifier")
    try:
        return sign(key, text)
    except UnicodeEncodeError:
        raise InvalidArgumentError("identifier", _NOT_UNICODE) from None
