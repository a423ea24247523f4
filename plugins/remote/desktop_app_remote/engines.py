"""The remote engines the user added: their names and addresses, what was last learnt of them,
and their API keys, which live in the system keyring and never in a file of Parley's.

``remote-engines.json`` (in Parley's data folder) holds, per engine, its URL, whether it has a
key, and the models and capabilities its last check found, so the model picker can list them
at start-up without waiting on the network.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from desktop_app.api import ParleyError, PluginContext, atomic_write_text, move_aside

__all__ = ["EngineConfig", "EngineError", "EngineStore", "KEYRING_SERVICE", "ServedModel", "add_engine", "check_name",
           "check_url", "delete_key", "read_key", "remove_engine", "store_key"]

#: The keyring's service name for engine keys (the user name is the engine's name).
KEYRING_SERVICE = "parley-remote-engines"
FILE_NAME = "remote-engines.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class EngineError(ParleyError):
    """A bad engine name, URL or key, or a keyring that cannot keep the key; the message says what to do."""


@dataclass
class ServedModel:
    """A model an engine serves, as its last check found it."""

    id: str
    context_length: int = 0


@dataclass
class EngineConfig:
    """One remote engine."""

    name: str
    url: str
    has_key: bool = False
    #: "llama-server" (raw prompts, grammars, LoRA) or "openai" (any OpenAI-compatible server).
    kind: str = ""
    models: list[ServedModel] = field(default_factory=list)
    #: What the last check found: "tools", "json_schema", "grammar", "lora", "tokenize"...
    capabilities: dict[str, Any] = field(default_factory=dict)
    checked: float = 0.0
    #: Why the last check failed ("" when it worked).
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineConfig":
        models = [ServedModel(**m) for m in data.get("models", []) if isinstance(m, dict) and "id" in m]
        return cls(name=data["name"], url=data["url"], has_key=bool(data.get("has_key")), kind=data.get("kind", ""),
                   models=models, capabilities=dict(data.get("capabilities") or {}),
                   checked=float(data.get("checked") or 0), problem=str(data.get("problem") or ""))


def check_name(name: str) -> str:
    """``name`` if it can name an engine (letters, digits, '.', '_' and '-'); else EngineError."""
    if not _NAME.match(name or ""):
        raise EngineError(f"{name!r} cannot name an engine: use up to 40 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit (e.g. gpu-box).")
    return name


def check_url(url: str) -> str:
    """The server's base URL without a trailing ``/v1`` or slash; EngineError when it is not http(s)."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(f"{url!r} is not a server address: give http://HOST:PORT (e.g. http://gpu-box:8080).")
    if parts.username or parts.password:
        raise EngineError(f"Give the address without a user name or password in it (they would be saved in a "
                          "file); give the API key separately, it goes to the system keyring.")
    if parts.query or parts.fragment:
        raise EngineError(f"{url!r} has a query or fragment; give only http://HOST:PORT and an optional path.")
    url = url.rstrip("/")
    return url[:-3].rstrip("/") if url.endswith("/v1") else url


class EngineStore:
    """The engines file, read and written whole (thread-safe)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._engines: dict[str, EngineConfig] = {}
        self._load()

    @classmethod
    def of(cls, context: PluginContext) -> "EngineStore":
        """The store in the plugin's data folder."""
        return cls(context.data_dir / FILE_NAME)

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._engines = {e["name"]: EngineConfig.from_dict(e) for e in data.get("engines", [])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            kept = move_aside(self.path)
            self.warnings.append(f"The remote engines file could not be read ({exc}); it was kept as {kept.name} "
                                 "and the list starts empty. Add the engines again in Settings → Engines.")
            self._engines = {}

    def _save(self) -> None:
        body = {"engines": [e.as_dict() for e in self._engines.values()]}
        atomic_write_text(self.path, json.dumps(body, indent=2) + "\n")

    def all(self) -> list[EngineConfig]:
        """Every engine, in the order they were added."""
        with self._lock:
            return list(self._engines.values())

    def get(self, name: str) -> EngineConfig:
        with self._lock:
            if name not in self._engines:
                known = ", ".join(self._engines) or "none yet"
                raise EngineError(f"There is no remote engine called {name!r} (engines: {known}). "
                                  "Add one with `parley engines add NAME URL`.")
            return self._engines[name]

    def add(self, name: str, url: str, *, replace: bool = False) -> EngineConfig:
        """Add (or with ``replace``, change the address of) an engine; nothing is checked on the network.

        A new address on another host keeps no key: the old server's key must not go to it
        (``has_key`` is then False; the caller forgets the key, see :func:`add_engine`).
        """
        name, url = check_name(name), check_url(url)
        with self._lock:
            if name in self._engines and not replace:
                raise EngineError(f"There is already an engine called {name!r} ({self._engines[name].url}). "
                                  "Pick another name, or replace it (--replace).")
            old = self._engines.get(name)
            keep_key = old is not None and old.has_key and _origin(old.url) == _origin(url)
            self._engines[name] = EngineConfig(name, url, has_key=keep_key)
            self._save()
            return self._engines[name]

    def record_check(self, name: str, url: str, *, found: EngineConfig | None = None, problem: str = "") -> None:
        """Keep what a check of ``name`` at ``url`` found (or why it failed). A check of an address
        the engine no longer has, or of an engine removed meanwhile, changes nothing."""
        with self._lock:
            current = self._engines.get(name)
            if current is None or current.url != url:
                return
            if found is not None:
                current.kind, current.models, current.capabilities = found.kind, found.models, found.capabilities
            current.checked, current.problem = now(), problem
            self._save()

    def remove(self, name: str) -> EngineConfig:
        config = self.get(name)
        with self._lock:
            del self._engines[name]
            self._save()
        return config

    def set_has_key(self, name: str, has_key: bool) -> None:
        with self._lock:
            if name in self._engines:
                self._engines[name].has_key = has_key
                self._save()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


#: Keyring backends that do not keep a secret safely: a plain file, or nothing at all.
_UNSAFE_KEYRINGS = ("keyrings.alt.file.PlaintextKeyring", "keyring.backends.null.Keyring",
                    "keyring.backends.fail.Keyring")


def _keyring():
    """The system keyring; EngineError when there is none, or only one that writes keys in plain
    text (unless the user chose it with PYTHON_KEYRING_BACKEND)."""
    import keyring

    backend = keyring.get_keyring()
    kind = f"{type(backend).__module__}.{type(backend).__qualname__}"
    if kind in _UNSAFE_KEYRINGS and not os.environ.get("PYTHON_KEYRING_BACKEND"):
        raise EngineError("There is no system keyring to keep the API key in, and Parley never writes keys into "
                          "files: start your desktop's keyring (GNOME Keyring, KWallet, the macOS Keychain or "
                          "Windows Credential Manager), or choose a keyring backend with the "
                          "PYTHON_KEYRING_BACKEND environment variable.")
    return keyring


def _keyring_problem(exc: Exception) -> EngineError:
    return EngineError(f"The system keyring failed ({type(exc).__name__}: {exc}). Parley never "
                       "writes keys into its own files: start your desktop's keyring (GNOME Keyring, KWallet, the "
                       "macOS Keychain or Windows Credential Manager), or choose a keyring backend with the "
                       "PYTHON_KEYRING_BACKEND environment variable.")


def store_key(name: str, key: str) -> None:
    """Keep ``key`` for engine ``name`` in the system keyring."""
    if not key or not key.strip():
        raise EngineError("The API key is empty.")
    keyring = _keyring()
    try:
        keyring.set_password(KEYRING_SERVICE, name, key.strip())
    except Exception as exc:
        raise _keyring_problem(exc) from None


def read_key(name: str) -> str | None:
    """Engine ``name``'s key from the keyring (None when it has none)."""
    keyring = _keyring()
    try:
        return keyring.get_password(KEYRING_SERVICE, name)
    except Exception as exc:
        raise _keyring_problem(exc) from None


def delete_key(name: str) -> None:
    """Forget engine ``name``'s key (nothing happens when there is none)."""
    keyring = _keyring()
    try:
        keyring.delete_password(KEYRING_SERVICE, name)
    except keyring.errors.PasswordDeleteError:
        pass
    except Exception as exc:
        raise _keyring_problem(exc) from None


def now() -> float:
    return time.time()


def add_engine(store: EngineStore, name: str, url: str, key: str | None = None, *, replace: bool = False) -> EngineConfig:
    """Add an engine and keep its key (the keyring may wait for the user: not on the GUI thread).

    A key given replaces the engine's key; an address on another host drops the old key.
    """
    check_name(name)
    old = next((e for e in store.all() if e.name == name), None)
    if key is not None and not key.strip():
        raise EngineError("The API key is empty.")
    if key:
        _keyring()  # refuse before anything is saved when the key could not be kept
    config = store.add(name, url, replace=replace)
    if key:
        store_key(name, key)
        store.set_has_key(name, True)
    elif old is not None and old.has_key and not config.has_key:
        delete_key(name)  # the old server's key must not go to the new one
    return store.get(name)


def remove_engine(store: EngineStore, name: str) -> EngineConfig:
    """Forget an engine and its key (the key first: a keyring that fails leaves the engine listed)."""
    config = store.get(name)
    if config.has_key:
        delete_key(name)
    return store.remove(name)
