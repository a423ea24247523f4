"""The remote engines the user added: their names and addresses, what was last learnt of them,
and their API keys, which live in the system keyring and never in a file of Parley's.

``remote-engines.json`` (in Parley's data folder) holds, per engine, its URL, whether it has a
key, and the models and capabilities its last check found, so the model picker can list them
at start-up without waiting on the network.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from desktop_app.api import ParleyError, PluginContext, atomic_write_text, move_aside

__all__ = ["EngineConfig", "EngineError", "EngineStore", "KEYRING_SERVICE", "ServedModel", "check_name",
           "check_url", "delete_key", "read_key", "store_key"]

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
        """Add (or with ``replace``, change the address of) an engine; nothing is checked on the network."""
        name, url = check_name(name), check_url(url)
        with self._lock:
            if name in self._engines and not replace:
                raise EngineError(f"There is already an engine called {name!r} ({self._engines[name].url}). "
                                  "Pick another name, or replace it (--replace).")
            old = self._engines.get(name)
            self._engines[name] = EngineConfig(name, url, has_key=old.has_key if old else False)
            self._save()
            return self._engines[name]

    def update(self, config: EngineConfig) -> None:
        """Keep what a check found (an engine removed meanwhile stays removed)."""
        with self._lock:
            if config.name in self._engines:
                self._engines[config.name] = config
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


def _keyring():
    import keyring

    return keyring


def _keyring_problem(exc: Exception) -> EngineError:
    return EngineError(f"The system keyring cannot keep the API key ({type(exc).__name__}: {exc}). Parley never "
                       "writes keys into its own files: start your desktop's keyring (GNOME Keyring, KWallet, the "
                       "macOS Keychain or Windows Credential Manager), or choose a keyring backend with the "
                       "PYTHON_KEYRING_BACKEND environment variable.")


def store_key(name: str, key: str) -> None:
    """Keep ``key`` for engine ``name`` in the system keyring."""
    if not key or not key.strip():
        raise EngineError("The API key is empty.")
    try:
        _keyring().set_password(KEYRING_SERVICE, name, key.strip())
    except Exception as exc:
        raise _keyring_problem(exc) from None


def read_key(name: str) -> str | None:
    """Engine ``name``'s key from the keyring (None when it has none)."""
    try:
        return _keyring().get_password(KEYRING_SERVICE, name)
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
