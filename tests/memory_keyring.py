"""A keyring in memory, for tests: a test machine has no desktop keyring, and the user's is never touched.

    with memory_keyring() as ring:   # keyring.get_keyring() is this ring inside the block
        ...
        ring.secrets                 # {(service, user): secret}
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["MemoryKeyring", "memory_keyring"]


class MemoryKeyring:
    """The secrets, in a dict. Made a keyring backend only inside :func:`memory_keyring`, so that
    importing this module does not register a backend with keyring."""

    priority = 1

    def __init__(self):
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.secrets.get((service, username))

    def set_password(self, service, username, password):
        self.secrets[(service, username)] = password

    def delete_password(self, service, username):
        import keyring.errors

        if self.secrets.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("no such password")


@contextlib.contextmanager
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Make a fresh in-memory keyring the process's keyring until the block ends."""
    import keyring
    from keyring.backend import KeyringBackend

    ring = type("TestKeyring", (MemoryKeyring, KeyringBackend), {})()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    try:
        yield ring
    finally:
        keyring.set_keyring(previous)
