"""Documents in the app: the answer path with the real chat model, the panel, sources, watching."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

CORPUS = Path(__file__).resolve().parents[3] / "tests" / "data" / "docs"


@pytest.fixture
def corpus(tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS / "projects", target / "projects")
    shutil.copytree(CORPUS / "faq", target / "faq")
    return target


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context

    ctx = build_context(paths)
    ctx.settings.set("model.context_length", 2048)
    ctx.settings.set("generation.temperature", 0.0)
    ctx.settings.set("generation.max_tokens", 48)
    yield ctx
    ctx.close()


def test_the_answer_path_puts_numbered_sources_in_the_prompt(context, corpus):
    from desktop_app_local_docs import INSTRUCTION, state

    state.index.add_collection("work", [str(corpus)])
    state.index.index("work")
    context.load_model(None)
    conv = context.store.create_conversation()
    outcome = context.chat.send(conv.id, "Who is the lead engineer of Project Orca?",
                                plugin_options={"local_docs": {"collections": ["work"]}})
    trace = context.store.get_trace(outcome.message.id)
    blocks = [e for e in trace["entries"] if e["kind"] == "context"]
    assert blocks and all(e["plugin"] == "local_docs" for e in blocks)
    assert blocks[0]["content"]["metadata"]["path"].endswith("orca.md")
    assert "[1] (" in trace["prompt"] and "Amara Osei" in trace["prompt"] and INSTRUCTION in trace["prompt"]
    assert "Amara" in outcome.message.content
    # The conversation remembers its collections.
    assert context.store.get_conversation(conv.id).meta["local_docs"] == {"collections": ["work"]}
    follow = context.chat.send(conv.id, "When does Project Heron launch?")
    assert "3 March" in follow.result.prompt


def test_when_nothing_is_relevant_the_model_is_told_to_say_so(context, corpus):
    from desktop_app_local_docs import NOTHING_FOUND, state

    context.settings.set("plugins.local_docs.min_similarity", 0.5)
    state.index.add_collection("work", [str(corpus)])
    state.index.index("work")
    context.load_model(None)
    conv = context.store.create_conversation()
    outcome = context.chat.send(conv.id, "Explain quantum chromodynamics on a lattice.",
                                plugin_options={"local_docs": {"collections": ["work"]}})
    trace = context.store.get_trace(outcome.message.id)
    assert NOTHING_FOUND in trace["prompt"]
    assert not [e for e in trace["entries"] if e["kind"] == "context"]


def test_the_search_tool_is_registered(context, corpus):
    from desktop_app_local_docs import state

    tools = []
    context.plugins.hook.register_tools(register=tools.append)
    tool = [t for t in tools if t.name == "search_documents"][0]
    state.index.add_collection("work", [str(corpus)])
    state.index.index("work")
    results = tool.function(query="sugar kelp harvest")
    assert results[0]["path"].endswith("kelp.html")


def test_the_panel_indexes_with_progress_and_answers_show_sources(qtbot, context, corpus):
    from PySide6.QtWidgets import QDockWidget

    from desktop_app.ui.app import create_window
    from desktop_app_local_docs import state
    from desktop_app_local_docs.ui import DocumentsPanel

    window = create_window(context)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: context.engine.loaded and not window.model_loading, timeout=60_000)
        dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Documents"][0]
        dock.show()
        panel = window.findChild(DocumentsPanel)
        progress = []
        panel.bridge.progressed.connect(lambda p: progress.append(p))
        with qtbot.waitSignal(panel.bridge.finished, timeout=120_000):
            panel.add_folder("work", str(corpus))
        assert progress and progress[-1].files_done == progress[-1].files_total == 10
        assert panel.list.count() == 1 and panel.checked() == ["work"]
        assert "up to date" in panel.status.text()
        qtbot.keyClicks(window.composer.edit, "How much sugar kelp did the trial harvest?")
        from PySide6.QtCore import Qt

        with qtbot.waitSignal(window.answer_finished, timeout=60_000):
            qtbot.keyClick(window.composer.edit, Qt.Key_Return)
        from desktop_app.ui.chat_view import SourcesView

        answer = [w for w in window.chat_view.widgets if w.message.role == "assistant"][-1]
        sources = answer.findChild(SourcesView)
        assert sources is not None and sources.sources[0]["metadata"]["path"].endswith("kelp.html")
        assert "file://" in sources.text() and "[1]" in sources.text()
        # Watching: a changed file is picked up by the periodic check.
        (corpus / "faq" / "kayaks.txt").write_text("Kayaks must now be returned by 19:30.\n")
        with qtbot.waitSignal(panel.bridge.finished, timeout=60_000) as blocker:
            panel.check_for_changes()
        assert blocker.args[1].indexed == 1
        assert "19:30" in state.index.search(["work"], "When must kayaks be returned?", k=1)[0].text
    finally:
        window.close()


def test_stopping_an_index_run_keeps_what_was_done_and_update_continues(qtbot, context, corpus, tmp_path):
    from desktop_app.ui.app import create_window
    from desktop_app_local_docs import state
    from desktop_app_local_docs.ui import DocumentsPanel

    big = tmp_path / "big"
    for i in range(6):
        shutil.copytree(corpus, big / f"c{i}")
    window = create_window(context, load_model=False)
    qtbot.addWidget(window)
    try:
        panel = window.findChild(DocumentsPanel)
        state.index.add_collection("big", [str(big)])
        seen = []

        def on_progress(p):
            seen.append(p)
            if p.files_done == 12 and len(seen) == 12:  # only during the first run
                panel.cancel()

        panel.bridge.progressed.connect(on_progress)
        with qtbot.waitSignal(panel.bridge.finished, timeout=120_000) as blocker:
            panel.start_index("big")
        assert blocker.args[1].cancelled and "stopped" in panel.status.text()
        done = state.index.collections()["big"]["files"]
        assert 0 < done < 60
        with qtbot.waitSignal(panel.bridge.finished, timeout=120_000) as blocker:
            panel.start_index("big")
        assert not blocker.args[1].cancelled and state.index.collections()["big"]["files"] == 60
        assert blocker.args[1].unchanged >= done
    finally:
        window.close()
