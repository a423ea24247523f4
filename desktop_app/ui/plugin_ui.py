"""The plugins' part of the window: the panels, actions and composer widgets their hooks
register, and the message shown when a plugin is switched off after failing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QMenu, QWidget

from desktop_app.ui.actions import menu_action

if TYPE_CHECKING:
    from desktop_app.ui.main_window import MainWindow

__all__ = ["PluginUI"]

log = logging.getLogger(__name__)

#: The menus a plugin's action can go to (``register(..., menu=...)``).
MENUS = ("plugins", "settings")

_AREAS = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}


class PluginUI:
    """Adds what plugins register through the window hooks (see :mod:`desktop_app.ui.hookspecs`).

    Panels become docks toggled from the View menu and the toolbar, actions go to the
    Plugins menu (or the Settings menu), composer widgets sit above the message box.
    """

    def __init__(self, window: MainWindow):
        self._window = window
        self._reported_failures: set[str] = set()
        self._settings_separated = False
        #: The plugins' panels (their widgets), for :meth:`WindowApi.find_panel`.
        self.panels: list[QWidget] = []

    def build(self) -> None:
        """Call the plugins' window hooks once, while the window is built.

        Every plugin's context gets the window's :class:`WindowApi`; a panel's factory gets
        its plugin's context, actions and composer widgets get the WindowApi. A plugin whose
        panel or widget fails to build is switched off; the window goes on without it.
        """
        window = self._window
        plugins = window.context.plugins
        for name, record in plugins.records.items():
            if record.status == "enabled":
                window.context.plugin_context(name).window = window.api

        def add_panel(plugin: str, title: str, factory: Callable[..., QWidget], area: str = "right") -> None:
            dock = QDockWidget(title, window)
            dock.setObjectName(f"panel-{title}")
            try:
                dock.setWidget(factory(window.context.plugin_context(plugin), dock))
            except Exception:
                dock.setParent(None)  # no empty panel is left behind
                dock.deleteLater()
                raise
            window.addDockWidget(_AREAS.get(area, Qt.RightDockWidgetArea), dock)
            self.panels.append(dock.widget())
            # Panels open from the View menu or the toolbar (the window remembers which are open),
            # so a small screen is not crowded by panels nobody asked for.
            dock.hide()
            toggle = dock.toggleViewAction()
            window.view_menu.addAction(toggle)
            window.toolbar.addAction(toggle)

        def add_action(plugin: str, text: str, callback: Callable[[Any], Any], shortcut: str | None = None,
                       toolbar: bool = False, menu: str = "plugins") -> None:
            target = self._menu(plugin, text, menu)

            def run() -> None:
                try:
                    callback(window.api)
                except Exception as exc:  # a broken action must not take the window down
                    log.exception("plugin %s failed in its action %r", plugin, text)
                    window.show_error(f"The plugin “{plugin}” failed in “{text}”: {type(exc).__name__}: {exc}")

            action = menu_action(window, target, text, run, shortcut)
            if toolbar:
                window.toolbar.addAction(action)

        def add_composer_widget(plugin: str, factory: Callable[..., QWidget]) -> None:
            window.composer.add_extra(factory(window.api, window.composer))

        def add_message_action(plugin: str, text: str, callback: Callable[[Any, Any], Any],
                               roles: tuple[str, ...] | list[str] = ("assistant",)) -> None:
            def run(message: Any) -> None:
                try:
                    callback(window.api, message)
                except Exception as exc:  # a broken action must not take the window down
                    log.exception("plugin %s failed in its message action %r", plugin, text)
                    window.show_error(f"The plugin “{plugin}” failed in “{text}”: {type(exc).__name__}: {exc}")

            window.chat_view.message_actions.append((text, run, tuple(roles)))

        for hook, add in (("register_panels", add_panel), ("register_actions", add_action),
                          ("register_composer_widgets", add_composer_widget),
                          ("register_message_actions", add_message_action)):
            for entry in plugins.collect(hook):
                if plugins.records[entry.plugin].status == "failed":
                    continue  # switched off by an earlier panel or widget of its own
                try:
                    add(entry.plugin, *entry.args, **entry.kwargs)
                except Exception as exc:  # one plugin's broken panel must not stop the window
                    log.exception("plugin %s failed in %s", entry.plugin, hook)
                    plugins.fail(entry.plugin, f"raised in {hook}: {type(exc).__name__}: {exc}")

    def _menu(self, plugin: str, text: str, menu: str) -> QMenu:
        """The menu a plugin's action goes to; the Plugins menu for a name it does not know."""
        window = self._window
        if menu == "settings":
            if not self._settings_separated:  # the window's own entries first, then the plugins'
                window.settings_menu.addSeparator()
                self._settings_separated = True
            return window.settings_menu
        if menu != "plugins":
            log.warning("plugin %s asked for the menu %r for its action %r; it is in the Plugins menu "
                        "(menus: %s)", plugin, menu, text, ", ".join(MENUS))
        return window.plugins_menu

    def report_failures(self) -> None:
        """Tell the user, once per plugin, about each plugin switched off after it failed."""
        window = self._window
        for record in window.context.plugins.failed():
            if record.name not in self._reported_failures:
                self._reported_failures.add(record.name)
                window.show_error(f"The plugin “{record.name}” was switched off: {record.error}. "
                                  "See Settings → Plugins.")
