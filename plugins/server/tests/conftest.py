"""A real Parley with the built-in model, its API server on a free loopback port, and clients."""

from __future__ import annotations

import pytest


@pytest.fixture
def app_context(paths):
    """Parley's context with the real built-in model loaded, greedy by default."""
    from desktop_app.context import build_context

    ctx = build_context(paths)
    ctx.settings.set("model.context_length", 2048)
    ctx.settings.set("generation.temperature", 0.0)
    ctx.settings.set("generation.max_tokens", 48)
    ctx.load_model(None)
    yield ctx
    ctx.close()


@pytest.fixture
def server_context(app_context):
    """The server plugin's own context."""
    return app_context.plugin_context("server")


@pytest.fixture
def controller(server_context):
    """The server, started on 127.0.0.1 and a free port; stopped afterwards."""
    from desktop_app_server import state

    controller = state.controller
    controller.start("127.0.0.1", 0)
    yield controller
    controller.stop()


@pytest.fixture
def model_name(server_context):
    """The name the server gives the loaded model."""
    return next(m["name"] for m in server_context.library() if m["loaded"])


@pytest.fixture
def client(controller):
    """The official OpenAI client, pointed at the server (no retries: a 429 must show)."""
    import openai

    c = openai.OpenAI(base_url=controller.url + "/v1", api_key="not-needed", max_retries=0, timeout=300)
    yield c
    c.close()


@pytest.fixture
def http(controller):
    """A plain HTTP client for what the openai package would not send (bad JSON, bad headers)."""
    import httpx

    with httpx.Client(base_url=controller.url, timeout=300) as c:
        yield c


#: A ChatML template that knows tools (Hermes-style <tool_call> blocks), for a scripted model.
HERMES = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def scripted(paths):
    """A Parley whose model is scripted, with its API server running: ``make(native_tools=False)``
    (True: a chat template that knows tools, writing Hermes-style ``<tool_call>`` blocks; else
    ChatML, which knows none) returns an object with ``engine`` (a :class:`desktop_app.testing.FakeEngine`: queue its
    replies with ``enqueue``), ``app``, ``url`` and ``controller``. For what a real model's
    sampling cannot be made to do on demand (fail, write several calls, vote)."""
    import types

    from desktop_app.context import build_context
    from desktop_app.testing import FakeEngine
    from desktop_app_server.controller import ServerController

    made = []

    def make(native_tools: bool = False):
        engine = FakeEngine(template_source=HERMES if native_tools else None)
        engine.model_path = paths.data_dir / "scripted-model.gguf"
        app = build_context(paths, engine=engine)
        controller = ServerController(app.plugin_context("server"))
        url = controller.start("127.0.0.1", 0)
        made.append((controller, app))
        return types.SimpleNamespace(engine=engine, app=app, url=url, controller=controller)

    yield make
    for controller, app in made:
        controller.stop()
        app.close()
