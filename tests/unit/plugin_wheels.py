"""Tiny plugin wheels and a throwaway environment for the install tests (nothing is downloaded)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

HELLO = '''"""Says hello."""
from desktop_app.api import hookimpl, tool_from_function


def greet(name: str) -> str:
    """Greet someone by name.

    Args:
        name: Who to greet.
    """
    return f"hello {name}"


@hookimpl
def register_tools(register):
    register(tool_from_function(greet, requires_approval=False))


@hookimpl
def register_panels(register):
    register("Hello panel", lambda context, parent: None)
'''


def make_wheel(folder: Path, dist: str = "parley-hello", version: str = "0.1", *, module: str = "parley_hello",
               source: str = HELLO, entry_points: dict[str, str] | None = None,
               requires: list[str] = ()) -> Path:
    """Write ``<dist>-<version>-py3-none-any.whl`` into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    entry_points = {"hello": module} if entry_points is None else entry_points
    stem = f"{dist.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{module}/__init__.py": source,
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {dist}\nVersion: {version}\nSummary: A test plugin\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: parley-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if entry_points:
        files[f"{info}/entry_points.txt"] = "[desktop_app]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def throwaway_environment(folder: Path) -> Path:
    """A venv that sees every package of the running one but installs into its own folder.

    Returns its python. pip installs and uninstalls there, so the shared .venv stays as it is.
    """
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # addsitedir also runs the .pth files there (the editable install of Parley is one).
    shared = sysconfig.get_paths()["purelib"]
    Path(purelib, "_parley_shared_env.pth").write_text(f"import site; site.addsitedir({shared!r})\n")
    return python
