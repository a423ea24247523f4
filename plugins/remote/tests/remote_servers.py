"""llama.cpp's llama-server serving SmolLM2 on a free loopback port (built once per machine by
`make native`), for the remote backend's tests, its benchmark and its screenshot."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ALIAS = "smollm2"
ENGINE = "box"
REF = f"remote:{ENGINE}/{ALIAS}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """A llama-server process on a loopback port; :meth:`kill` and :meth:`start` again at will."""

    def __init__(self, log: Path, extra: list[str]):
        from desktop_app.core.models import default_model_path
        from tests.native_tools import native_tool

        self.port = free_port()
        self.log = log
        self.command = [str(native_tool("llama-server")), "-m", str(default_model_path()), "--alias", ALIAS,
                        "--host", "127.0.0.1", "--port", str(self.port), "-c", "2048", "-np", "1", "-t", "2",
                        "--no-webui", *extra]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LlamaServer":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama-server was not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
