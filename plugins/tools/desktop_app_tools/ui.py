"""The Tools panel: which tools this conversation offers, how each is approved, the folders
the file tools may read, and the MCP servers with their status and log."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.ui.api import run_task
from desktop_app_tools import POLICIES, state

__all__ = ["ToolsPanel"]

_STATE_COLOURS = {"ready": "#2e8b57", "starting": "#b8860b", "failed": "#c0392b", "crashed": "#c0392b"}


class _Relay(QObject):
    """Carries "something changed" from any thread to the GUI thread."""

    changed = Signal()


def _source_title(source: str) -> str:
    if source.startswith("mcp:"):
        return f"MCP server {source[4:]}"
    return {"tools": "Built-in", "local_docs": "Documents"}.get(source, source or "Other")


class ToolsPanel(QWidget):
    """Manage tools without ever blocking the window."""

    def __init__(self, context: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.setObjectName("toolsPanel")
        self._relay = _Relay(self)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(100)  # many changes in a burst: one redraw
        self._refresh_timer.timeout.connect(self.refresh)
        self._relay.changed.connect(self._refresh_timer.start)
        self._listener = self._relay.changed.emit
        state.listeners.append(self._listener)
        self.destroyed.connect(lambda *_: _forget(self._listener))
        self._filling = False

        layout = QVBoxLayout(self)
        intro = QLabel("Tick the tools the model may use in this conversation.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("toolsTree")
        self.tree.setAccessibleName("Tools")
        self.tree.setHeaderLabels(["Tool", "Approval"])
        self.tree.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.itemChanged.connect(self._on_tree_item_changed)
        layout.addWidget(self.tree, 3)
        row = QHBoxLayout()
        row.addWidget(QLabel("Calls:"))
        self.choice = QComboBox(self)
        self.choice.setObjectName("toolChoice")
        self.choice.addItem("the model decides", "auto")
        self.choice.addItem("always call a tool first", "required")
        self.choice.setToolTip("Very small models rarely decide to use a tool on their own; "
                               "'always call a tool first' makes their first reply a tool call.")
        self.choice.currentIndexChanged.connect(self._on_choice_current_index_changed)
        row.addWidget(self.choice, 1)
        layout.addLayout(row)

        layout.addWidget(QLabel("<b>Folders the file tools may read</b>"))
        self.folders = QListWidget(self)
        self.folders.setObjectName("grantedFolders")
        self.folders.setAccessibleName("Granted folders")
        self.folders.setMaximumHeight(90)
        layout.addWidget(self.folders)
        row = QHBoxLayout()
        self.grant_button = QPushButton("Grant a folder…", self)
        self.grant_button.clicked.connect(self._on_grant_button_clicked)
        self.revoke_button = QPushButton("Revoke", self)
        self.revoke_button.clicked.connect(self._on_revoke_button_clicked)
        row.addWidget(self.grant_button)
        row.addWidget(self.revoke_button)
        row.addStretch(1)
        layout.addLayout(row)

        layout.addWidget(QLabel("<b>MCP servers</b>"))
        self.servers = QTreeWidget(self)
        self.servers.setObjectName("mcpServers")
        self.servers.setAccessibleName("MCP servers")
        self.servers.setHeaderLabels(["Server", "Status"])
        self.servers.setRootIsDecorated(False)
        self.servers.setMaximumHeight(110)
        self.servers.header().setSectionResizeMode(1, QHeaderView.Stretch)
        layout.addWidget(self.servers, 1)
        row = QHBoxLayout()
        self.restart_button = QPushButton("Restart", self)
        self.restart_button.clicked.connect(self._on_restart_button_clicked)
        self.log_button = QPushButton("Log", self)
        self.log_button.clicked.connect(self._on_log_button_clicked)
        self.config_button = QPushButton("Edit mcp.json", self)
        self.config_button.clicked.connect(self._on_config_button_clicked)
        self.reload_button = QPushButton("Reload", self)
        self.reload_button.setToolTip("Read mcp.json again and start what changed")
        self.reload_button.clicked.connect(self._on_reload_button_clicked)
        for button in (self.restart_button, self.log_button, self.config_button, self.reload_button):
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        self.mcp_note = QLabel(self)
        self.mcp_note.setWordWrap(True)
        layout.addWidget(self.mcp_note)

        window = context.window
        if window is not None:
            window.conversation_shown.connect(lambda *_: self.refresh())
        self.window_ref = window
        self.refresh()

    # -- reading the state ----------------------------------------------------------------------
    def _conversation(self) -> int | None:
        return getattr(self.window_ref, "current_conversation", None)

    @Slot()
    def refresh(self) -> None:
        """Redraw everything from the plugin's state."""
        self._filling = True
        try:
            self._fill_tools()
            self._fill_folders()
            self._fill_servers()
            value = state.context.settings.get("tool_choice")
            self.choice.setCurrentIndex(max(0, self.choice.findData(value)))
        finally:
            self._filling = False

    def _fill_tools(self) -> None:
        offered, _ = state.offered(self._conversation())
        expanded = {self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())
                    if not self.tree.topLevelItem(i).isExpanded()}
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for name, tool in sorted(state.all_tools().items(), key=lambda kv: (kv[1].source != "tools", kv[1].source, kv[0])):
            title = _source_title(tool.source)
            group = groups.get(title)
            if group is None:
                group = groups[title] = QTreeWidgetItem(self.tree, [title])
                group.setFlags(Qt.ItemIsEnabled)
                group.setExpanded(title not in expanded)
            item = QTreeWidgetItem(group, [name])
            item.setData(0, Qt.UserRole, name)
            item.setToolTip(0, tool.description)
            item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsUserCheckable | Qt.ItemIsSelectable)
            item.setCheckState(0, Qt.Checked if name in offered else Qt.Unchecked)
            combo = QComboBox(self.tree)
            combo.setAccessibleName(f"Approval for {name}")
            labels = {"ask": "ask me", "allow": "allow", "deny": "deny"}
            for policy in POLICIES:
                combo.addItem(labels[policy], policy)
            combo.setCurrentIndex(POLICIES.index(state.policy(tool)))
            combo.currentIndexChanged.connect(lambda _i, n=name, c=combo: self._set_policy(n, c.currentData()))
            self.tree.setItemWidget(item, 1, combo)
        if not groups:
            QTreeWidgetItem(self.tree, ["No tools: enable a plugin that provides some."])

    def _fill_folders(self) -> None:
        self.folders.clear()
        for folder in state.granted_folders():
            self.folders.addItem(str(folder))
        if not self.folders.count():
            self.folders.addItem("(none: the file tools can read nothing)")
            self.folders.item(0).setFlags(Qt.NoItemFlags)

    def _fill_servers(self) -> None:
        self.servers.clear()
        mcp = state.mcp
        servers = mcp.servers() if mcp is not None else []
        for server in servers:
            item = QTreeWidgetItem(self.servers, [server.name, f"{server.state}: {server.message}"])
            item.setData(0, Qt.UserRole, server.name)
            item.setToolTip(1, server.message)
            colour = _STATE_COLOURS.get(server.state)
            if colour:
                item.setData(1, Qt.ForegroundRole, _colour(colour))
        errors = mcp.config_errors() if mcp is not None else []
        if errors:
            self.mcp_note.setText("<span style='color:#c0392b'>" + "<br>".join(html.escape(e) for e in errors) + "</span>")
        elif not servers:
            self.mcp_note.setText(f"No servers. Add them to {html.escape(str(state.mcp_file))} "
                                  "(\"mcpServers\": name → command, args, env), then Reload.")
        else:
            self.mcp_note.setText("")
        has_server = bool(servers)
        self.restart_button.setEnabled(has_server)
        self.log_button.setEnabled(has_server)

    # -- changes by the user --------------------------------------------------------------------
    @Slot(QTreeWidgetItem, int)
    def _on_tree_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if self._filling or column != 0 or item.data(0, Qt.UserRole) is None:
            return
        chosen = []
        for i in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(i)
            for j in range(group.childCount()):
                child = group.child(j)
                if child.checkState(0) == Qt.Checked:
                    chosen.append(child.data(0, Qt.UserRole))
        state.set_offered(self._conversation(), chosen)

    def _set_policy(self, name: str, policy: str) -> None:
        if not self._filling:
            state.set_policy(name, policy)

    @Slot(int)
    def _on_choice_current_index_changed(self, index: int) -> None:
        if not self._filling:
            self.context.settings.set("tool_choice", self.choice.itemData(index))
            self.context.settings.save()

    @Slot()
    def _on_grant_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Grant a folder to the file tools")
        if folder:
            try:
                state.grant(folder)
            except ValueError as exc:
                self._error(str(exc))

    @Slot()
    def _on_revoke_button_clicked(self) -> None:
        item = self.folders.currentItem()
        if item is not None and item.flags() & Qt.ItemIsSelectable:
            state.revoke(item.text())

    def _selected_server(self) -> str | None:
        item = self.servers.currentItem() or self.servers.topLevelItem(0)
        return item.data(0, Qt.UserRole) if item is not None else None

    @Slot()
    def _on_restart_button_clicked(self) -> None:
        name = self._selected_server()
        if name and state.mcp is not None:
            # Stopping a server can take a moment: never on the GUI thread.
            run_task(lambda: state.mcp.restart(name), lambda _: self.refresh(), self._error)

    @Slot()
    def _on_log_button_clicked(self) -> None:
        name = self._selected_server()
        if not name or state.mcp is None:
            return
        dialog = QDialog(self)
        dialog.setWindowTitle(f"Log of MCP server {name}")
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        layout = QVBoxLayout(dialog)
        text = QPlainTextEdit(dialog)
        text.setReadOnly(True)
        text.setPlainText(state.mcp.log_tail(name) or "(empty)")
        text.moveCursor(text.textCursor().MoveOperation.End)
        layout.addWidget(text)
        dialog.resize(640, 400)
        dialog.open()

    @Slot()
    def _on_config_button_clicked(self) -> None:
        path = state.mcp_file
        if not path.exists():
            path.write_text('{\n  "mcpServers": {\n  }\n}\n', encoding="utf-8")
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    @Slot()
    def _on_reload_button_clicked(self) -> None:
        def reload() -> None:
            if state.mcp is None:
                state.start_mcp()
            else:
                state.mcp.reload()

        run_task(reload, lambda _: self.refresh(), self._error)

    def _error(self, message: str) -> None:
        window = self.window_ref
        if window is not None and hasattr(window, "show_error"):
            window.show_error(message)


def _colour(name: str) -> Any:
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(name))


def _forget(listener: Any) -> None:
    if listener in state.listeners:
        state.listeners.remove(listener)
