"""Render the window chatting with Settings → Server… open and the server running, to
docs/screenshot-server.png.

Uses the built-in model for real answers and a real server on 127.0.0.1, in a temporary data
folder. Needs an X display, because the picture is the whole screen, the window and the dialog
over it, taken with ImageMagick's ``import``; a window manager (openbox here) gives the dialog
its title bar:

    Xvfb :58 -screen 0 1280x800x24 & DISPLAY=:58 openbox &
    DISPLAY=:58 env -u QT_QPA_PLATFORM .venv/bin/python scripts/screenshot_server.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Asked by "another program" through the API, so the request log has something to show.
API_QUESTIONS = ("Summarise in one sentence: the meeting moved to Thursday at 10.",
                 "Suggest a name for a function that parses dates.")


def free_port(preferred: int = 8080) -> int:
    """``preferred`` when nothing listens there, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def main() -> None:
    if not os.environ.get("DISPLAY"):
        sys.exit("screenshot_server.py needs an X display (see its docstring).")
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    out = ROOT / "docs" / "screenshot-server.png"
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication

        from desktop_app.context import build_context
        from desktop_app.ui.app import create_window

        context = build_context()
        context.settings.set("generation.temperature", 0.0)
        context.settings.set("generation.max_tokens", 160)
        window = create_window(context, load_model=False)
        window.resize(1280, 800)
        window.move(0, 0)
        window.show()

        def wait_for(signal, timeout_ms: int = 120_000) -> None:
            loop = QEventLoop()
            signal.connect(loop.quit)
            QTimer.singleShot(timeout_ms, loop.quit)
            loop.exec()

        def settle(rounds: int = 20) -> None:
            for _ in range(rounds):
                QApplication.processEvents()

        window.load_model(None)
        wait_for(window.model_ready)
        for title, question, answer in (
                ("Weekly team update", "Draft a short agenda for a weekly team meeting.",
                 "1. Wins of the week\n2. Blockers\n3. Plans for next week"),
                ("Reading list", "Recommend a classic novel for a long train ride.",
                 "*Pride and Prejudice* by Jane Austen: witty, and easy to pick up again.")):
            conversation = context.store.create_conversation(title)
            context.store.add_message(conversation.id, "user", question)
            context.store.add_message(conversation.id, "assistant", answer)
        window.send("What is a good way to keep notes for a research project?")
        wait_for(window.answer_finished)

        # Settings → Server…, started from its toggle, as a user would.
        action = next(a for a in window.settings_menu.actions() if a.text().replace("&", "") == "Server…")
        action.trigger()
        from desktop_app_server import state
        from desktop_app_server.ui import ServerDialog

        dialog = window.findChild(ServerDialog, "serverDialog")
        dialog.port_spin.setValue(free_port())
        dialog.toggle.click()
        wait_for(dialog.server_started)

        # Another program asks through the API (an editor plugin, say).
        import openai

        client = openai.OpenAI(base_url=state.controller.url + "/v1", api_key="unused-on-loopback")
        model = next(m["name"] for m in context.plugin_context("server").library() if m["loaded"])
        done = threading.Event()

        def ask() -> None:
            try:
                for question in API_QUESTIONS:
                    client.chat.completions.create(model=model, max_tokens=40,
                                                   messages=[{"role": "user", "content": question}])
                stream = client.chat.completions.create(model=model, max_tokens=24, stream=True, messages=[
                    {"role": "user", "content": "Write a commit message for a typo fix in the README."}])
                for _ in stream:
                    pass
            finally:
                done.set()

        threading.Thread(target=ask, daemon=True).start()
        while not done.wait(0.02):
            QApplication.processEvents()

        # The window chats while the server runs: the picture is taken as the answer is written.
        tokens: list[str] = []
        finished: list[int] = []
        window.client.worker.token_received.connect(lambda _c, text: tokens.append(text))
        window.answer_finished.connect(finished.append)
        window.send("Give me three tips for writing clear emails, as a list.")
        while len(tokens) < 45 and not finished:
            QApplication.processEvents()
            time.sleep(0.01)
        dialog.resize(780, 520)
        dialog.move(480, 230)
        dialog.refresh()
        settle()
        out.parent.mkdir(exist_ok=True)
        subprocess.run(["import", "-window", "root", str(out)], check=True)
        print(f"wrote {out.relative_to(ROOT)}")
        if not finished:
            wait_for(window.answer_finished)
        client.close()
        window.close()
        context.close()


if __name__ == "__main__":
    main()
