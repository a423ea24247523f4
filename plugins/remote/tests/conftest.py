"""Real engines for the remote backend's tests: llama.cpp's llama-server serving SmolLM2, started
on free loopback ports (built once per machine by `make native`), and Parley contexts using it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lora" / "tests"))  # lora_test_files

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


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory) -> Path:
    """A random LoRA adapter for SmolLM2, strong enough to change answers (as the lora plugin's tests make)."""
    from desktop_app.core.models import default_model_path
    from desktop_app_lora.convert import convert_peft_adapter
    from lora_test_files import make_peft

    root = tmp_path_factory.mktemp("remote-lora")
    folder = make_peft(root / "strong", seed=7, std=0.05)
    out = root / "strong.gguf"
    convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    return out


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory, lora_adapter):
    """llama-server with SmolLM2 and one adapter it loads at 0 (each request sets its scale)."""
    server = LlamaServer(tmp_path_factory.mktemp("llama-server") / "server.log",
                         ["--lora", str(lora_adapter), "--lora-init-without-apply"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory):
    """llama-server that wants an API key."""
    server = LlamaServer(tmp_path_factory.mktemp("keyed-server") / "server.log", ["--api-key", "sesame-123"]).start()
    yield server
    server.stop()


class MemoryKeyring:
    """A keyring in memory for the tests (a test machine has no desktop keyring; the user's is never touched)."""

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


@pytest.fixture(autouse=True)
def file_keyring():
    """The tests' keyring (named for what it stands in for: the system's)."""
    import keyring
    from keyring.backend import KeyringBackend

    ring = type("TestKeyring", (MemoryKeyring, KeyringBackend), {})()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture
def context(paths):
    """Parley with the built-in plugins, greedy, nothing loaded yet."""
    from desktop_app.context import build_context

    ctx = build_context(paths)
    ctx.settings.set("model.context_length", 2048)
    ctx.settings.set("generation.temperature", 0.0)
    ctx.settings.set("generation.max_tokens", 40)
    yield ctx
    ctx.close()


@pytest.fixture
def remote(context, llama_server):
    """The context with llama-server added as engine "box" and its model loaded."""
    from desktop_app_remote import state

    state.store.add(ENGINE, llama_server.url)
    if llama_server.process.poll() is not None:
        llama_server.start()
    context.load_model(REF)
    return context
