"""Helpers for plugins' own window code (their ``ui.py``): the supported way to run work off
the GUI thread and to show Markdown like the chat does."""

from desktop_app.ui.chat_view import MarkdownView
from desktop_app.ui.markdown import render_markdown
from desktop_app.ui.workers import run_task

__all__ = ["MarkdownView", "render_markdown", "run_task"]
