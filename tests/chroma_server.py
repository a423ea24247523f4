"""Chroma's own server (``chroma run``, shipped with the chromadb package) on a loopback port,
for tests and benchmarks.

    with ChromaServerProcess(tmp_path / "chroma") as server:
        server.url  # http://127.0.0.1:PORT, answering its heartbeat

It listens on 127.0.0.1 only, keeps its data in the folder it is given, and runs with
telemetry off. ``stop()`` and ``start()`` again (same folder, same port) stand in for a server
that goes down and comes back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["ChromaServerProcess", "chroma_command", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chroma_command() -> list[str]:
    """The ``chroma`` program of the running Python's environment (the chromadb it imports)."""
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if found is None:
        raise RuntimeError("chroma (from the chromadb package) is not installed here; run make install")
    return [found]


def _die_with_parent() -> None:
    # A test run killed outright (a timeout, Ctrl-C twice) must not leave a server behind.
    # (Linux sends it when the thread that started the server ends: start it from a thread that lives.)
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ChromaServerProcess:
    """One ``chroma run`` process; a context manager that stops it on exit."""

    def __init__(self, path: Path, port: int | None = None, startup_timeout: float = 60.0):
        self.path = Path(path)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log = self.path.with_name(self.path.name + ".log")

    @property
    def url(self) -> str:
        """The server's address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ChromaServerProcess":
        """Start the server and wait until it answers its heartbeat."""
        self.path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False", NO_COLOR="1")
        # A log file, not a pipe nobody reads: the server must never block on its output.
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*chroma_command(), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            if self.alive():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chroma run did not answer within {self.startup_timeout:.0f} s: "
                           f"{self.log.read_text()[-2000:]}")

    def alive(self) -> bool:
        """Whether the server answers its heartbeat."""
        # No proxy, whatever the environment says: the server is on this machine.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url}/api/v2/heartbeat", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> "ChromaServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
