"""Real engines for the remote backend's tests (see remote_servers.py), a keyring that is not the
user's, and Parley contexts using them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lora" / "tests"))  # lora_test_files
sys.path.insert(0, str(Path(__file__).resolve().parent))  # remote_servers, under its own name

from remote_servers import ENGINE, REF, LlamaServer  # noqa: E402

from tests.memory_keyring import memory_keyring  # noqa: E402


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


@pytest.fixture(autouse=True)
def file_keyring():
    """The tests' keyring (named for what it stands in for: the system's)."""
    with memory_keyring() as ring:
        yield ring


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
