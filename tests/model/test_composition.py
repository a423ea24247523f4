"""Plugins compose: a template, the documents plugin and user plugins all reach the prompt, in a
documented order that does not depend on the order the plugins were registered in."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest

from desktop_app.api import hookimpl

CORPUS = Path(__file__).resolve().parents[1] / "data" / "docs"
FRENCH = "Always answer in French."
ZETA = "Sign every answer with a Z."


def user_plugin(name: str, text: str):
    module = types.ModuleType(name)
    module.prepare_turn = hookimpl(lambda turn: turn.add_system(text))
    return module


@pytest.fixture
def context(paths, tmp_path):
    from desktop_app.context import build_context

    shutil.copytree(CORPUS / "projects", tmp_path / "corpus" / "projects")
    ctx = build_context(paths)
    ctx.settings.set("generation.max_tokens", 8)
    yield ctx
    ctx.close()


@pytest.mark.parametrize("order", [("zeta", "french"), ("french", "zeta")])
def test_a_template_the_documents_and_user_plugins_all_reach_the_prompt_in_a_defined_order(context, tmp_path, order):
    from desktop_app_local_docs import INSTRUCTION, state as docs
    from desktop_app_prompt_templates import state as templates

    for name in order:
        assert context.plugins.register(user_plugin(name, {"french": FRENCH, "zeta": ZETA}[name]), name=name)
    docs.index.add_collection("work", [str(tmp_path / "corpus")])
    docs.index.index("work")
    context.load_model(None)
    conversation = context.store.create_conversation()
    outcome = context.chat.send(conversation.id, "Who is the lead engineer of Project Orca?", plugin_options={
        "local_docs": {"collections": ["work"]},
        "prompt_templates": {"template": "Translator", "variables": {"language": "German"}},
    })
    trace = context.store.get_trace(outcome.message.id)
    translator = templates.library.get("Translator").system
    system = trace["prompt"].split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]
    # The template replaced the base prompt only; then the plugins' lines, by plugin name;
    # then the sources the documents plugin found.
    expected_head = "\n\n".join([translator, FRENCH, INSTRUCTION, ZETA])
    assert system.startswith(expected_head + "\n\nUse the following sources to answer, and cite them by number.\n\n[1] ("), system
    assert "Amara Osei" in system
    kinds = [(e["plugin"], e["kind"]) for e in trace["entries"]]
    assert ("core", "system") in kinds and ("prompt_templates", "system_replaced") in kinds
    assert ("french", "system") in kinds and ("zeta", "system") in kinds and ("local_docs", "system") in kinds
