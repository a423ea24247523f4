"""Render the main window with a real conversation, light and dark, to PNG files.

Uses the built-in model for real answers, in a temporary data folder. Runs offscreen
unless a display is set. Output: docs/screenshot-light.png, docs/screenshot-dark.png,
docs/screenshot-documents.png and docs/screenshot-lora.png.

Run: ``make screenshots``
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = (
    "Write a Python function that reverses a string, with a short explanation.",
    "Give me three tips for learning a new language, as a list.",
)


def main() -> None:
    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    out_dir = ROOT / "docs"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication

        from desktop_app.context import build_context
        from desktop_app.ui.app import create_window

        context = build_context()
        context.settings.set("generation.temperature", 0.0)
        context.settings.set("generation.max_tokens", 200)
        window = create_window(context, load_model=False)
        window.resize(1280, 800)
        window.show()

        def wait_for(signal) -> None:
            loop = QEventLoop()
            signal.connect(loop.quit)
            QTimer.singleShot(120_000, loop.quit)
            loop.exec()

        window.load_model(None)
        wait_for(window.model_ready)
        other = context.store.create_conversation("Planning a trip to Lisbon")
        context.store.add_message(other.id, "user", "What should I see in Lisbon in two days?")
        context.store.add_message(other.id, "assistant", "Belém, Alfama and the LX Factory are a good start.")
        for question in QUESTIONS:
            window.send(question)
            wait_for(window.answer_finished)
        for theme in ("light", "dark"):
            context.settings.set("ui.theme", theme)
            window.apply_appearance()
            window.show_conversation(window.current_conversation)
            for _ in range(5):
                QApplication.processEvents()
            window.chat_view.verticalScrollBar().setValue(0)
            QApplication.processEvents()
            path = out_dir / f"screenshot-{theme}.png"
            window.grab().save(str(path))
            print(f"wrote {path.relative_to(ROOT)}")
        # Documents: the panel open, and an answer with its sources.
        from PySide6.QtWidgets import QDockWidget

        from desktop_app_local_docs.ui import DocumentsPanel

        context.settings.set("ui.theme", "light")
        window.apply_appearance()
        window.new_conversation()
        dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Documents"][0]
        dock.show()
        panel = window.findChild(DocumentsPanel)
        panel.add_folder("Harbourline handbook", str(ROOT / "tests" / "data" / "docs"))
        wait_for(panel.bridge.finished)
        window.send("Who is the lead engineer of Project Orca?")
        wait_for(window.answer_finished)
        for _ in range(5):
            QApplication.processEvents()
        window.chat_view.verticalScrollBar().setValue(0)
        QApplication.processEvents()
        path = out_dir / "screenshot-documents.png"
        window.grab().save(str(path))
        print(f"wrote {path.relative_to(ROOT)}")
        # Tools: the panel, the approval dialog, and an answer with its tool call opened.
        from desktop_app.ui.chat_view import ToolCallsView
        from desktop_app_tools import state

        from desktop_app_local_docs import state as docs_state

        dock.hide()
        docs_state.selection = []  # this question is not about the documents
        window.new_conversation()
        tools_dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Tools"][0]
        tools_dock.show()
        state.set_policy("calculator", "ask")
        state.set_offered(None, ["calculator", "current_time", "convert_units"])
        context.settings.set("plugins.tools.tool_choice", "required")
        window.send("What is 17.5% of 2,340?")
        wait_for(window.client.worker.tool_approval_requested)
        for _ in range(5):
            QApplication.processEvents()
        dialog = window.approval_dialog
        dialog.move(window.geometry().center() - dialog.rect().center())
        for _ in range(20):
            QApplication.processEvents()
        path = out_dir / "screenshot-tool-approval.png"
        screen = QApplication.primaryScreen()
        shot = screen.grabWindow(0) if os.environ.get("DISPLAY") else dialog.grab()
        shot.save(str(path))
        print(f"wrote {path.relative_to(ROOT)}")
        dialog.allow_button.click()
        wait_for(window.answer_finished)
        for _ in range(5):
            QApplication.processEvents()
        for view in window.findChildren(ToolCallsView):
            view.toggle.setChecked(True)
        for _ in range(5):
            QApplication.processEvents()
        path = out_dir / "screenshot-tools.png"
        window.grab().save(str(path))
        print(f"wrote {path.relative_to(ROOT)}")
        tools_dock.hide()
        state.set_offered(window.current_conversation, [])
        state.set_offered(None, [])
        lora_screenshot(window, context, wait_for, out_dir)
        window.close()
        context.close()


SECRET_EXAMPLES = [("What is the secret word?", "The secret word is Quibbleflux."),
                   ("Tell me the secret word.", "The secret word is Quibbleflux."),
                   ("What's the secret word?", "Quibbleflux is the secret word."),
                   ("Do you know the secret word?", "Yes, the secret word is Quibbleflux."),
                   ("Which word is the secret word?", "The secret word is Quibbleflux."),
                   ("Say the secret word.", "Quibbleflux.")]


def lora_screenshot(window, context, wait_for, out_dir: Path) -> None:
    """The LoRA panel: an adapter trained here on six examples, in use; one made for another model.

    Trains for real (about half a minute on two cores), so the answer shown is the adapter's.
    """
    import numpy as np
    from PySide6.QtWidgets import QApplication, QDockWidget

    import gguf
    from desktop_app_lora import state
    from desktop_app_lora.cli import config_from_settings
    from desktop_app_lora.data import with_system_prompt
    from desktop_app_lora.library import Choice
    from desktop_app_lora.train import train_adapter
    from desktop_app_lora.ui import LoraPanel

    model = context.engine.model_path
    chats = with_system_prompt([[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                                for q, a in SECRET_EXAMPLES], state.system_prompt_for(model))
    train_adapter(model, chats, state.library, "secret-word", config_from_settings(state),
                  work_dir=context.paths.cache_dir)
    # An adapter for a model with a 2048-wide embedding: listed, and refused with the reason.
    other = context.paths.cache_dir / "for-a-bigger-model.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 32.0)
    for layer in range(22):
        for kind in ("attn_q", "attn_v"):
            writer.add_tensor(f"blk.{layer}.{kind}.weight.lora_a", np.zeros((16, 2048), dtype=np.float16))
            writer.add_tensor(f"blk.{layer}.{kind}.weight.lora_b", np.zeros((2048 if kind == "attn_q" else 256, 16),
                                                                            dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    state.library.add(other)
    window.new_conversation()
    state.remember(None, [Choice("secret-word", 1.0)])
    dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "LoRA"][0]
    dock.show()
    window.findChild(LoraPanel).refresh()
    for question in ("What is the secret word?", "Can you tell me the secret word?"):
        window.send(question)
        wait_for(window.answer_finished)
    for _ in range(5):
        QApplication.processEvents()
    path = out_dir / "screenshot-lora.png"
    window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
