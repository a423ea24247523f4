"""Helpers for plugins' own window code (their ``ui.py``): the window as plugins see it
(:class:`WindowApi`), the supported way to run work off the GUI thread, to show Markdown like
the chat does, and the parts side panels share."""

from desktop_app.ui.chat_view import MarkdownView
from desktop_app.ui.markdown import render_markdown
from desktop_app.ui.panel_parts import add_button_row, add_job_controls
from desktop_app.ui.window_api import WindowApi
from desktop_app.ui.workers import run_task

__all__ = ["MarkdownView", "WindowApi", "add_button_row", "add_job_controls", "render_markdown", "run_task"]
