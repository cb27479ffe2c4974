"""Sign the pickles leek stores, and check them before anything unpickles them.

Runs in every process that offloads tasks, runs them or reads their results. A pickle is
code: whoever can write the task table could otherwise make a worker (or a web process
reading a return value) run anything. Stored pickles are MAGIC, then the HMAC-SHA256 of the
pickle under the site's key, then the pickle. The key is LEEK["signing_key"], or Django's
SECRET_KEY; older keys that still verify are LEEK["signing_key_fallbacks"], or Django's
SECRET_KEY_FALLBACKS, so that a key can be rotated while tasks signed with the old one wait.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from leek import conf
from leek.exceptions import BadSignature

MAGIC = b"leek-signed-1:"
DIGEST_SIZE = hashlib.sha256().digest_size
_HEADER = len(MAGIC) + DIGEST_SIZE


def sign(data: bytes, purpose: str) -> bytes:
    """Return `data` with its signature under the current key in front.

    `purpose` ("call", "value") is signed too: a stored thing cannot pass for another kind.
    """
    key = _keys(*_secrets())[0]
    return MAGIC + _mac(key, purpose, data) + data


def _mac(key: bytes, purpose: str, data: bytes) -> bytes:
    mac = hmac.new(key, purpose.encode() + b":", hashlib.sha256)
    mac.update(data)
    return mac.digest()


def unsign(stored: bytes | memoryview, what: str, purpose: str) -> bytes:
    """Return the pickle inside `stored` if its signature verifies; raise BadSignature.

    `what` names the stored thing in the error ("the call to app.tasks.send"); `purpose` is
    the one it was signed for.
    """
    stored = bytes(stored)
    if not stored.startswith(MAGIC) or len(stored) < _HEADER:
        raise BadSignature(
            f"{what} is not signed, so it was not unpickled: it was not saved by leek's "
            "offload (or by a leek older than its signatures). Offload the task again."
        )
    digest, data = stored[len(MAGIC) : _HEADER], stored[_HEADER:]
    for key in _keys(*_secrets()):
        if hmac.compare_digest(digest, _mac(key, purpose, data)):
            return data
    raise BadSignature(
        f"the signature of {what} does not verify, so it was not unpickled: it was changed "
        "in the table, or signed with a key that is neither LEEK['signing_key'] (or "
        "SECRET_KEY) nor one of its fallbacks."
    )


def _secrets() -> tuple[str, tuple[str, ...]]:
    """Return the current key and the fallbacks, as the settings give them."""
    from django.conf import settings

    leek = conf.get()
    if leek.signing_key:
        return leek.signing_key, leek.signing_key_fallbacks
    return settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()))


@functools.lru_cache(maxsize=8)
def _keys(current: str, fallbacks: tuple[str, ...]) -> tuple[bytes, ...]:
    """Return the HMAC keys derived from the secrets, the current one first."""
    return tuple(
        hashlib.sha256(b"leek.signing:" + secret.encode()).digest()
        for secret in (current, *fallbacks)
    )
