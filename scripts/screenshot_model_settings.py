"""Render the model info dialog, with a model's own settings, to docs/screenshot-model-settings.png.

A temporary home folder holds the data and a copy of the built-in model under ~/Models, added
to the library with settings of its own and loaded, so the dialog shows what a user sees.
Runs offscreen unless a display is set.

Run: ``.venv/bin/python scripts/screenshot_model_settings.py``
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    out = ROOT / "docs" / "screenshot-model-settings.png"
    with tempfile.TemporaryDirectory() as home:
        os.environ["HOME"] = home
        os.environ["PARLEY_HOME"] = str(Path(home) / ".parley")
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication

        from desktop_app.context import build_context
        from desktop_app.core.models import default_model_path
        from desktop_app.ui.app import create_window

        models = Path(home) / "Models"
        models.mkdir()
        copy = models / default_model_path().name
        try:
            os.link(default_model_path(), copy)
        except OSError:
            shutil.copyfile(default_model_path(), copy)
        context = build_context()
        context.models.add(copy, name="SmolLM2 135M, terse")
        context.models.set_settings("SmolLM2 135M, terse", {
            "context_length": 4096, "temperature": 0.2, "max_tokens": 256,
            "system_prompt": "You are a concise assistant. Answer in at most two sentences."})
        context.settings.set("model.path", "SmolLM2 135M, terse")
        context.settings.set("ui.theme", "light")
        window = create_window(context, load_model=False)
        window.show()

        def wait_for(signal) -> list:
            got: list = []
            loop = QEventLoop()
            signal.connect(lambda *args: (got.extend(args), loop.quit()))
            QTimer.singleShot(120_000, loop.quit)
            loop.exec()
            return got

        window.load_model(None)
        wait_for(window.model_ready)
        window.open_model_info(None)
        dialog = wait_for(window.model_controller.model_info_opened)[0]
        dialog.resize(dialog.sizeHint().width(), dialog.sizeHint().height())
        dialog.save_button.setFocus()  # not a field's focus frame in the picture
        for _ in range(10):
            QApplication.processEvents()
        dialog.grab().save(str(out))
        print(f"wrote {out.relative_to(ROOT)}")
        dialog.close()
        window.close()
        context.close()


if __name__ == "__main__":
    main()
