"""Starting Parley again while its window is open brings that window to the front.

The running window listens on a local socket named after its data folder; a second start
on the same folder (refused by the folder's lock, see ``core/instance.py``) asks it to show
itself and exits. Nothing but "show" is understood, and only from this user's own socket.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["WindowHandOver", "server_name", "show_running_window"]

_REQUEST = b"show\n"
_REPLY = b"ok\n"


def server_name(data_dir: Path) -> str:
    """The local socket for ``data_dir`` (the same folder gives the same socket).

    In the user's own runtime folder where the system has one, so that no other user can take
    the name; Qt puts a bare name in the shared temporary folder.
    """
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode("utf-8")).hexdigest()[:16]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and sys.platform != "win32":
        return os.path.join(runtime, f"parley-{digest}")
    return f"parley-{digest}"


def show_running_window(data_dir: Path, wait_s: float = 10.0) -> bool:
    """Ask the window running on ``data_dir`` to come to the front; True when it answered.

    Tries for up to ``wait_s`` seconds: a window that is still starting listens only once it
    is on screen (a double-click on the launcher while the first start is under way).
    """
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtNetwork import QLocalSocket

    _app = QCoreApplication.instance() or QCoreApplication([])
    deadline = time.monotonic() + wait_s
    while True:
        socket = QLocalSocket()
        socket.connectToServer(server_name(data_dir))
        if socket.waitForConnected(1000):
            socket.write(_REQUEST)
            socket.waitForBytesWritten(5000)
            reply = b""
            while len(reply) < len(_REPLY) and socket.waitForReadyRead(5000):
                reply += bytes(socket.readAll().data())
            socket.disconnectFromServer()
            return reply.startswith(_REPLY)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


class WindowHandOver:
    """Listens for a second start and shows ``window``. Keep a reference while the window lives."""

    def __init__(self, window: Any, data_dir: Path):
        from PySide6.QtNetwork import QLocalServer

        self.window = window
        self.server = QLocalServer(window)
        self.server.setSocketOptions(QLocalServer.UserAccessOption)
        name = server_name(data_dir)
        # This process holds the folder's lock, so a socket left by a crashed window is stale.
        QLocalServer.removeServer(name)
        self.listening = self.server.listen(name)
        self.server.newConnection.connect(self._on_server_new_connection)

    def _on_server_new_connection(self) -> None:
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            socket.readyRead.connect(lambda s=socket: self._on_socket_ready_read(s))
            socket.disconnected.connect(socket.deleteLater)

    def _on_socket_ready_read(self, socket: Any) -> None:
        if bytes(socket.peek(len(_REQUEST)).data()) != _REQUEST[: socket.bytesAvailable()]:
            socket.abort()  # not a request this app sends
            return
        if socket.bytesAvailable() < len(_REQUEST):
            return  # the rest is on its way
        socket.read(len(_REQUEST))
        window = self.window
        window.showNormal() if window.isMinimized() else window.show()
        window.raise_()
        window.activateWindow()
        socket.write(_REPLY)
        socket.flush()
