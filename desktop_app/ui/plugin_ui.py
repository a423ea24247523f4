"""The plugins' part of the window: the panels, actions and composer widgets their hooks
register, and the message shown when a plugin is switched off after failing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QWidget

from desktop_app.ui.actions import menu_action

if TYPE_CHECKING:
    from desktop_app.ui.main_window import MainWindow

__all__ = ["PluginUI"]

_AREAS = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}


class PluginUI:
    """Adds what plugins register through the window hooks (see :mod:`desktop_app.ui.hookspecs`).

    Panels become docks toggled from the View menu and the toolbar, actions go to the
    Plugins menu, composer widgets sit above the message box.
    """

    def __init__(self, window: MainWindow):
        self._window = window
        self._reported_failures: set[str] = set()

    def build(self) -> None:
        """Call the plugins' window hooks once, while the window is built."""
        window = self._window
        hook = window.context.plugins.hook

        def add_panel(title: str, factory: Callable[..., QWidget], area: str = "right") -> None:
            dock = QDockWidget(title, window)
            dock.setObjectName(f"panel-{title}")
            dock.setWidget(factory(window.context, dock))
            window.addDockWidget(_AREAS.get(area, Qt.RightDockWidgetArea), dock)
            # Panels open from the View menu or the toolbar (the window remembers which are open),
            # so a small screen is not crowded by panels nobody asked for.
            dock.hide()
            toggle = dock.toggleViewAction()
            window.view_menu.addAction(toggle)
            window.toolbar.addAction(toggle)

        def add_action(text: str, callback: Callable[[Any], Any], shortcut: str | None = None,
                       toolbar: bool = False) -> None:
            action = menu_action(window, window.plugins_menu, text, lambda: callback(window), shortcut)
            window.plugins_menu.menuAction().setVisible(True)
            if toolbar:
                window.toolbar.addAction(action)

        def add_composer_widget(factory: Callable[..., QWidget]) -> None:
            window.composer.add_extra(factory(window, window.composer))

        hook.register_panels(register=add_panel)
        hook.register_actions(register=add_action)
        hook.register_composer_widgets(register=add_composer_widget)

    def report_failures(self) -> None:
        """Tell the user, once per plugin, about each plugin switched off after it failed."""
        window = self._window
        for record in window.context.plugins.failed():
            if record.name not in self._reported_failures:
                self._reported_failures.add(record.name)
                window.show_error(f"The plugin “{record.name}” was switched off: {record.error}. "
                                  "See Settings → Plugins.")
