"""Hooks for plugins that add to the window: side panels and actions.

Kept apart from :mod:`desktop_app.hookspecs` so the core contract stays free of Qt. These
hooks are only called when the window runs; the command line never calls them.
"""

from __future__ import annotations

from typing import Callable

from desktop_app.hookspecs import hookspec

__all__ = ["register_panels", "register_actions", "register_composer_widgets", "register_message_actions"]


@hookspec
def register_panels(register: Callable[..., None]) -> None:
    """Add side panels (docks) by calling ``register(title, factory, area="right")``.

    ``factory(context, parent)`` returns the panel's QWidget; ``context`` is the plugin's own
    :class:`desktop_app.api.PluginContext` (``context.window`` is the
    :class:`desktop_app.ui.api.WindowApi`). It is built once, when the window is. ``area`` is
    "left", "right" or "bottom". A factory that raises switches its plugin off.
    Called on the GUI thread while the window is built; must not block.
    """


@hookspec
def register_actions(register: Callable[..., None]) -> None:
    """Add menu and toolbar actions by calling
    ``register(text, callback, shortcut=None, toolbar=False, menu="plugins")``.

    ``callback(window)`` runs on the GUI thread when the action is triggered, with the
    :class:`desktop_app.ui.api.WindowApi`; long work must go to a thread (``run_task``).
    ``menu`` is "plugins" (the Plugins menu) or "settings" (the Settings menu, for a plugin's
    own settings dialog); any other value is logged and the action goes to the Plugins menu.
    The action is also on the toolbar when ``toolbar`` is true. An exception in ``callback`` is
    shown to the user as a message; the window goes on. Called on the GUI thread while the
    window is built; must not block.
    """


@hookspec
def register_composer_widgets(register: Callable[..., None]) -> None:
    """Add controls above the message box by calling ``register(factory)``.

    ``factory(window, parent)`` returns a QWidget; ``window`` is the
    :class:`desktop_app.ui.api.WindowApi`: ``window.conversation_shown(object)`` tells it which
    conversation is open (its id, or None for a new one), ``window.composer_text()`` reads the
    message box. Called on the GUI thread while the window is
    built; must not block.
    """


@hookspec
def register_message_actions(register: Callable[..., None]) -> None:
    """Add entries to each message's "More" menu by calling
    ``register(text, callback, roles=("assistant",))``.

    ``callback(window, message)`` runs on the GUI thread with the
    :class:`desktop_app.ui.api.WindowApi` and the stored message (its ``id``, ``role``,
    ``content``, ``parent_id``, ``conversation_id``); ``context.conversations.message(id)`` reads
    the question an answer replies to. ``roles`` says which messages get the entry ("user",
    "assistant"). An exception in ``callback`` is shown to the user as a message. Called on the
    GUI thread while the window is built; must not block.
    """
