"""Any OpenAI-compatible server as an engine, here another Parley's (`parley serve` in its own
process and data folder): chat messages, JSON schemas as response_format, Stop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def other_parley(tmp_path_factory):
    """`parley serve` on a free port, with a data folder of its own."""
    home = tmp_path_factory.mktemp("other-parley")
    env = {**os.environ, "PARLEY_HOME": str(home), "PARLEY_LOAD_PLUGINS": "", "PYTHONUNBUFFERED": "1"}
    log = home / "serve.log"
    command = [str(Path(sys.executable).with_name("parley")), "serve", "--host", "127.0.0.1", "--port", "0"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 180
    url = None
    while time.monotonic() < deadline and url is None:
        if process.poll() is not None:
            raise RuntimeError(f"parley serve exited:\n{log.read_text()}")
        found = re.search(r"server on (http://127\.0\.0\.1:\d+)", log.read_text())
        url = found.group(1) if found else None
        time.sleep(0.1)
    assert url, log.read_text()
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_another_parley_serves_as_a_chat_engine(context, other_parley):
    from desktop_app.api import ChatMessage, GenerationOptions
    from desktop_app.core.chat import TurnFinished
    from desktop_app_remote import state

    state.store.add("parley-2", other_parley)
    checked = state.current_backend().check("parley-2")
    assert checked.kind == "openai" and checked.models
    model = checked.models[0].id
    warnings = context.load_model(f"remote:parley-2/{model}")
    assert any("not a llama.cpp server" in w for w in warnings)
    conversation = context.store.create_conversation("over there")
    outcome = context.chat.send(conversation.id, "What is the capital of France?")
    assert isinstance(outcome, TurnFinished) and outcome.message.content

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    done = list(context.engine.stream_chat([ChatMessage("user", "Name a city as JSON.")],
                                           GenerationOptions(temperature=0.0, max_tokens=40, json_schema=schema)))[-1]
    assert list(json.loads(done.text)) == ["city"]

    failed = list(context.engine.stream_chat([ChatMessage("user", "Hi")],
                                             GenerationOptions(grammar='root ::= "yes" | "no"')))[-1]
    assert type(failed).__name__ == "ErrorEvent" and "cannot follow an output grammar" in failed.message

    # The LoRA panel asks this to say why an adapter cannot be ticked.
    access = context.plugin_context("lora").model
    assert not access.runs_here
    assert "cannot apply LoRA adapters: only llama.cpp's llama-server can" in access.adapter_problem("/x/style.gguf")

    events = []
    for event in context.engine.stream_chat([ChatMessage("user", "Write a long story about a lighthouse.")],
                                            GenerationOptions(temperature=0.0, max_tokens=300)):
        events.append(event)
        if len(events) == 2:
            context.engine.cancel()
    assert events[-1].finish_reason == "cancelled" and len(events) < 40
