"""Starting Parley again while its window is open brings that window to the front.

The running window listens on a local socket named after its data folder; a second start
on the same folder (refused by the folder's lock, see ``core/instance.py``) asks it to show
itself and exits. Nothing but "show" is understood, and only from this user's own socket.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["WindowHandOver", "server_name", "show_running_window"]

_REQUEST = b"show\n"
_REPLY = b"ok\n"


def server_name(data_dir: Path) -> str:
    """The local socket's name for ``data_dir`` (the same folder gives the same name)."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode("utf-8")).hexdigest()[:16]
    return f"parley-{digest}"


def show_running_window(data_dir: Path, timeout_ms: int = 5000) -> bool:
    """Ask the window running on ``data_dir`` to come to the front; True when it answered."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtNetwork import QLocalSocket

    _app = QCoreApplication.instance() or QCoreApplication([])
    socket = QLocalSocket()
    socket.connectToServer(server_name(data_dir))
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(_REQUEST)
    socket.waitForBytesWritten(timeout_ms)
    reply = b""
    while len(reply) < len(_REPLY) and socket.waitForReadyRead(timeout_ms):
        reply += bytes(socket.readAll().data())
    socket.disconnectFromServer()
    return reply.startswith(_REPLY)


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
