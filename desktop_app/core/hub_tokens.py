"""The user's access token for a model hub, kept in the system keyring and nowhere else.

One token per hub: the keyring's service is "parley-hub", its user name the endpoint's host
(with the port when there is one), so a token for a mirror is never sent to huggingface.co.
The keyring may ask the user to unlock it: call these from a worker thread, not the GUI's.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

from desktop_app.core.hub_errors import HubError

__all__ = ["KEYRING_SERVICE", "forget_hub_token", "hub_token", "keyring_user", "save_hub_token"]

log = logging.getLogger(__name__)

KEYRING_SERVICE = "parley-hub"

#: Keyring backends that do not keep a secret: a plain-text file, or nothing at all.
_UNSAFE_KEYRINGS = ("keyrings.alt.file.PlaintextKeyring", "keyring.backends.null.Keyring",
                    "keyring.backends.fail.Keyring")
_NO_KEYRING = ("start your desktop's keyring (GNOME Keyring, KWallet, the macOS Keychain or Windows Credential "
               "Manager), or choose a keyring backend with the PYTHON_KEYRING_BACKEND environment variable")


def keyring_user(endpoint: str) -> str:
    """The keyring user name a hub's token is kept under: its host, and port if it has one."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or endpoint).lower()
    return f"{host}:{parts.port}" if parts.port else host


def _keyring():
    """The keyring module with a backend that keeps secrets; HubError when there is none."""
    import keyring

    backend = keyring.get_keyring()
    kind = f"{type(backend).__module__}.{type(backend).__qualname__}"
    if kind in _UNSAFE_KEYRINGS and not os.environ.get("PYTHON_KEYRING_BACKEND"):
        raise HubError(f"There is no system keyring to keep the hub token in, and Parley never writes tokens "
                       f"into files: {_NO_KEYRING}.")
    return keyring


def hub_token(endpoint: str) -> str | None:
    """The token saved for ``endpoint``, or None (also when there is no working keyring)."""
    try:
        return _keyring().get_password(KEYRING_SERVICE, keyring_user(endpoint)) or None
    except Exception as exc:  # a locked or missing keyring means "no token", not a failed search
        log.info("no hub token from the keyring: %s", exc)
        return None


def save_hub_token(endpoint: str, token: str) -> None:
    """Keep ``token`` for ``endpoint`` in the system keyring (replacing one saved before)."""
    token = token.strip()
    if not token:
        raise HubError("The token is empty. Create one at the hub (Settings → Access Tokens) and paste it.")
    if any(c.isspace() for c in token):
        raise HubError("A hub token is one word without spaces; check what was pasted.")
    keyring = _keyring()
    try:
        keyring.set_password(KEYRING_SERVICE, keyring_user(endpoint), token)
    except Exception as exc:
        raise HubError(f"The system keyring could not keep the token ({type(exc).__name__}: {exc}); "
                       f"{_NO_KEYRING}.") from None


def forget_hub_token(endpoint: str) -> bool:
    """Delete the token saved for ``endpoint``; False when there was none."""
    keyring = _keyring()
    try:
        if keyring.get_password(KEYRING_SERVICE, keyring_user(endpoint)) is None:
            return False
        keyring.delete_password(KEYRING_SERVICE, keyring_user(endpoint))
    except keyring.errors.PasswordDeleteError:
        return False
    except Exception as exc:
        raise HubError(f"The system keyring could not forget the token ({type(exc).__name__}: {exc}); "
                       f"{_NO_KEYRING}.") from None
    return True
