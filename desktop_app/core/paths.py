"""Where Parley keeps its files on disk, and how it writes them safely.

Every folder comes from platformdirs under the app name "Parley". Tests point
platformdirs at a temporary folder through ``PARLEY_HOME`` (see ``tests/conftest.py``),
so they never touch a user's real config or data.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from desktop_app.core.errors import DataFolderError

__all__ = ["AppPaths", "atomic_write_bytes", "atomic_write_text", "move_aside"]

APP_NAME = "Parley"


@dataclass(frozen=True)
class AppPaths:
    """The folders Parley reads and writes. Create them with :meth:`ensure`."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @classmethod
    def default(cls) -> "AppPaths":
        """Return the platform's folders, or folders under ``$PARLEY_HOME`` when it is set."""
        home = os.environ.get("PARLEY_HOME")
        if home:
            root = Path(home)
            return cls(root / "config", root / "data", root / "cache", root / "logs")
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        return cls(
            Path(dirs.user_config_dir),
            Path(dirs.user_data_dir),
            Path(dirs.user_cache_dir),
            Path(dirs.user_log_dir),
        )

    def ensure(self) -> "AppPaths":
        """Create every folder that is missing, check each can be written, and return ``self``.

        Raises :class:`DataFolderError` naming the folder and what to do, before anything
        has been written: a read-only folder would otherwise fail later, half-way through
        saving something.
        """
        for folder in (self.config_dir, self.data_dir, self.cache_dir, self.log_dir, self.plugins_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # Permissions alone do not tell (a read-only mount, a full disk): try a write.
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                if isinstance(exc, (FileExistsError, NotADirectoryError)):
                    problem, fix = "a file is in the way of the folder", "Move that file away"
                else:
                    problem = exc.strerror or str(exc)
                    fix = f"Make it writable (for example `chmod u+w {folder}`) or free some disk space"
                raise DataFolderError(
                    f"Parley cannot write to its folder {folder}: {problem}. {fix}, or start Parley "
                    "with its files in another folder: PARLEY_HOME=/path/to/folder parley") from exc
        return self

    @property
    def settings_file(self) -> Path:
        """The one TOML settings file."""
        return self.config_dir / "settings.toml"

    @property
    def database_file(self) -> Path:
        """The SQLite conversation store."""
        return self.data_dir / "conversations.db"

    @property
    def models_file(self) -> Path:
        """The model library's index."""
        return self.data_dir / "models.json"

    @property
    def models_dir(self) -> Path:
        """Where models copied into the library live."""
        return self.data_dir / "models"

    @property
    def plugins_dir(self) -> Path:
        """The user's plugins folder: drop a ``.py`` file or a package here."""
        return self.data_dir / "plugins"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half of one.

    The bytes go to a temporary file in the same folder, are fsynced, then renamed over the
    target; a crash at any moment leaves the previous file intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is durable only once the directory entry is on disk.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def move_aside(path: Path) -> Path:
    """Rename a file that cannot be read to ``<name>.corrupt-<time>`` and return the new path.

    The user's data is kept for a look (or a rescue) instead of being overwritten; raises
    OSError when the file cannot be renamed.
    """
    backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(backup)
    return backup
