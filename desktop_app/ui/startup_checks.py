"""Checks that run before Qt starts, so that a window that cannot open says why.

Qt aborts the process when its platform plugin cannot load ("no Qt platform plugin could be
initialized"), which a user sees as a crash with a message naming nothing they can install.
These checks look first, without importing any Qt library: is there a display at all, can the
platform plugin's system libraries be found (``ldd``), and does the X server answer. Each
problem comes back as text a person can act on; :func:`window_problem` returns the first.

Nothing here imports PySide6: the checks must run before it could abort.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

__all__ = [
    "display_problem",
    "missing_libraries",
    "platform_plugin_path",
    "platform_plugin_problem",
    "qt_platform",
    "qt_platforms",
    "window_problem",
    "x_server_problem",
]

#: System libraries Qt's Linux platform plugins need, with the package that has each one on
#: Debian/Ubuntu and on Fedora. Libraries missing from this table are named as they are.
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.M)


def qt_platforms(env: Mapping[str, str] | None = None) -> list[str]:
    """The platform plugins Qt will try, in order: ``QT_QPA_PLATFORM``'s, else wayland and/or xcb."""
    env = os.environ if env is None else env
    wanted = (env.get("QT_QPA_PLATFORM") or "").strip()
    if wanted:
        # "wayland;xcb" lists fallbacks, and "xcb:option=value" carries options.
        names = [part.split(":", 1)[0].strip().lower() for part in wanted.split(";")]
        return [name for name in names if name] or ["xcb"]
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return ["wayland", "xcb"]  # Qt falls back to X (XWayland) by itself
    return ["xcb"]


def qt_platform(env: Mapping[str, str] | None = None) -> str:
    """The platform plugin Qt will try first."""
    return qt_platforms(env)[0]


#: The variable that names the display each platform plugin connects to.
_DISPLAY_OF = {"xcb": "DISPLAY", "wayland": "WAYLAND_DISPLAY"}


def display_problem(env: Mapping[str, str] | None = None, platform: str | None = None,
                    qt: str | None = None) -> str | None:
    """Why no window can open because there is no display for the platform plugin, or None."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        return None
    qt = qt or (qt_platform(env) if env.get("QT_QPA_PLATFORM") else None)
    if qt is None:  # Qt will choose: either display will do
        if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
            return None
        missing = "neither DISPLAY nor WAYLAND_DISPLAY is set"
    else:
        variable = _DISPLAY_OF.get(qt)
        if variable is None or env.get(variable):
            return None  # there it is, or the plugin needs none (offscreen, vnc, eglfs ...)
        missing = f"{variable} is not set"
    return (f"There is no display here ({missing}), so the window "
            "cannot open. In a terminal, use `parley chat \"your question\"`; `parley --help` lists "
            "every command. To open the window, run Parley inside a desktop session.")


def platform_plugin_path(platform: str, qt_root: Path | None = None) -> Path | None:
    """The file of Qt's platform plugin ``platform`` inside PySide6, when it can be found."""
    if qt_root is None:
        spec = importlib.util.find_spec("PySide6")
        if spec is None or not spec.submodule_search_locations:
            return None
        qt_root = Path(next(iter(spec.submodule_search_locations))) / "Qt"
    folder = qt_root / "plugins" / "platforms"
    names = [f"libq{platform}.so"]
    if platform == "wayland":
        names += ["libqwayland-generic.so", "libqwayland-egl.so"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def missing_libraries(library: Path) -> list[str]:
    """The shared libraries ``library`` needs that the system cannot find (by ``ldd``).

    An empty list when all are found, or when ``ldd`` is not available to tell.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        done = subprocess.run([ldd, str(library)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(dict.fromkeys(_NOT_FOUND.findall(done.stdout + done.stderr)))


def install_hint(libraries: list[str]) -> str:
    """The install commands for Debian/Ubuntu and Fedora that provide ``libraries``."""
    known = [PACKAGES[name] for name in libraries if name in PACKAGES]
    unknown = [name for name in libraries if name not in PACKAGES]
    lines = []
    if known:
        debian = " ".join(dict.fromkeys(deb for deb, _ in known))
        fedora = " ".join(dict.fromkeys(fed for _, fed in known))
        lines += [f"  Debian/Ubuntu:  sudo apt install {debian}",
                  f"  Fedora:         sudo dnf install {fedora}"]
    for name in unknown:
        lines.append(f"  {name}: find its package with `apt-file search {name}` or `dnf provides '*/{name}'`")
    return "\n".join(lines)


def platform_plugin_problem(plugin: Path | None = None, platform: str | None = None) -> str | None:
    """Why Qt's platform plugin would fail to load for lack of system libraries, or None."""
    platform = platform or qt_platform()
    plugin = plugin or platform_plugin_path(platform)
    if plugin is None or not sys.platform.startswith("linux"):
        return None
    missing = missing_libraries(plugin)
    if not missing:
        return None
    return (f"The window cannot open: Qt's \"{platform}\" display plugin needs system libraries that are "
            f"not installed: {', '.join(missing)}.\nInstall them, then start Parley again:\n"
            f"{install_hint(missing)}\n"
            "Meanwhile `parley chat \"your question\"` works in a terminal.")


def x_server_problem(env: Mapping[str, str] | None = None, qt: str | None = None) -> str | None:
    """Why the X server named by ``DISPLAY`` does not answer, or None (also when not using X).

    ``qt`` is the platform plugin being checked (default: the one Qt tries first).
    """
    env = os.environ if env is None else env
    display = env.get("DISPLAY")
    if not display or (qt or qt_platform(env)) != "xcb" or not sys.platform.startswith("linux"):
        return None
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None  # the library check reports this one
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        failed = not connection or xcb.xcb_connection_has_error(connection)
    finally:
        if connection:
            xcb.xcb_disconnect(connection)  # xcb asks for this even after a failed connect
    if not failed:
        return None
    return (f"The window cannot open: the display {display!r} (from DISPLAY) does not answer. "
            "Check that the desktop session is running and that this user may use it "
            "(over SSH, connect with `ssh -X`). In a terminal, `parley chat \"your question\"` works.")


def window_problem(env: Mapping[str, str] | None = None, plugin: Path | None = None) -> str | None:
    """Why the window cannot open here, or None when it should.

    Qt tries each platform plugin in turn, so this reports a problem only when every one of
    them has one, and then the first plugin's (the one the user meant).
    """
    env = os.environ if env is None else env
    problems = []
    for qt in qt_platforms(env):
        problem = (display_problem(env, qt=qt)
                   or platform_plugin_problem(plugin, qt)
                   or x_server_problem(env, qt))
        if problem is None:
            return None
        problems.append(problem)
    return problems[0]
