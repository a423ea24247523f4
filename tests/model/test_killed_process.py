"""A process killed mid-answer loses nothing: the question and the partial answer are stored."""

import os
import signal
import subprocess
import sys
import time

from desktop_app.core.paths import AppPaths
from desktop_app.core.store import Store


def test_sigkill_mid_answer_keeps_question_and_partial_answer(paths):
    earlier = Store(paths.database_file)
    old = earlier.create_conversation("Earlier chat")
    earlier.add_message(old.id, "user", "An earlier question")
    earlier.add_message(old.id, "assistant", "An earlier answer")
    earlier.close()

    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop_app.cli", "chat", "--temperature", "0", "--max-tokens", "3000",
         "Write a very long essay about the history of the Roman Empire."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 120
        partial = ""
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            watcher = Store(AppPaths.default().database_file)
            convs = [c for c in watcher.list_conversations() if c.id != old.id]
            if convs:
                history = watcher.history(convs[0].id)
                if len(history) == 2 and len(history[1].content) > 80:
                    partial = history[1].content
            watcher.close()
            if partial:
                break
        assert partial, "the answer never started streaming into the store"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = Store(paths.database_file)
    try:
        assert [m.content for m in store.history(old.id)] == ["An earlier question", "An earlier answer"]
        new = [c for c in store.list_conversations() if c.id != old.id][0]
        question, answer = store.history(new.id)
        assert question.content.startswith("Write a very long essay")
        assert answer.status == "incomplete"
        assert answer.content.startswith(partial) and len(answer.content) >= len(partial)
        assert "incomplete" in store.export_markdown(new.id)
    finally:
        store.close()
