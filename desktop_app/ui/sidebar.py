"""The conversation list: newest first, new, rename, delete, and full-text search."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["Sidebar"]


class Sidebar(QWidget):
    """Lists conversations from the store.

    Signals:
        conversation_selected(int): open this conversation.
        new_requested(): start a new conversation.
        conversation_deleted(int): a conversation was deleted.
    """

    conversation_selected = Signal(int)
    new_requested = Signal()
    conversation_deleted = Signal(int)

    def __init__(self, store, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 0, 6)
        self.search = QLineEdit()
        self.search.setObjectName("searchBox")
        self.search.setPlaceholderText("Search conversations")
        self.search.setAccessibleName("Search conversations")
        self.search.setClearButtonEnabled(True)
        layout.addWidget(self.search)
        self.list = QListWidget()
        self.list.setObjectName("conversationList")
        self.list.setAccessibleName("Conversations")
        self.list.setWordWrap(True)
        layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.setAccessibleName("New chat")
        self.rename_button = QPushButton("Rename")
        self.rename_button.setAccessibleName("Rename conversation")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setAccessibleName("Delete conversation")
        for b in (self.new_button, self.rename_button, self.delete_button):
            # Compact buttons keep the sidebar narrow on small screens.
            b.setStyleSheet("padding: 3px 6px;")
            b.setMinimumWidth(0)
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.new_button.clicked.connect(self.new_requested)
        self.rename_button.clicked.connect(self.rename_current)
        self.delete_button.clicked.connect(self.delete_current)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _: self._search_timer.start())
        self._updating = False
        #: The conversation being answered right now; it cannot be deleted until the answer ends.
        self.busy_conversation: int | None = None

    def refresh(self, select: int | None = None) -> None:
        """Reload the list (or the search results) and keep or set the selection."""
        current = select if select is not None else self.current_id()
        self._updating = True
        self.list.clear()
        query = self.search.text().strip()
        if query:
            seen = set()
            for hit in self.store.search(query):
                if hit.conversation_id in seen:
                    continue
                seen.add(hit.conversation_id)
                item = QListWidgetItem(f"{hit.conversation_title}\n{hit.snippet}")
                item.setData(Qt.UserRole, hit.conversation_id)
                self.list.addItem(item)
        else:
            for conv in self.store.list_conversations():
                when = time.strftime("%d %b %H:%M", time.localtime(conv.updated))
                item = QListWidgetItem(f"{conv.title}\n{when}")
                item.setData(Qt.UserRole, conv.id)
                item.setToolTip(conv.title)
                self.list.addItem(item)
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.UserRole) == current:
                self.list.setCurrentRow(row)
                break
        self._updating = False

    def current_id(self) -> int | None:
        """The selected conversation's id, or None."""
        item = self.list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def _on_list_current_changed(self, current, previous) -> None:
        if not self._updating and current is not None:
            self.conversation_selected.emit(current.data(Qt.UserRole))

    def rename_current(self) -> None:
        """Ask for a new title for the selected conversation."""
        conv_id = self.current_id()
        if conv_id is None:
            return
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title:",
                                         text=self.store.get_conversation(conv_id).title)
        if ok and title.strip():
            self.store.rename_conversation(conv_id, title)
            self.refresh()

    def delete_current(self) -> None:
        """Delete the selected conversation after confirmation."""
        conv_id = self.current_id()
        if conv_id is None:
            return
        if conv_id == self.busy_conversation:
            QMessageBox.information(self, "Delete conversation",
                                    "This conversation is being answered. Stop the answer first.")
            return
        title = self.store.get_conversation(conv_id).title
        answer = QMessageBox.question(
            self, "Delete conversation",
            f"Delete “{title}” and all its messages? This cannot be undone.",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
        )
        if answer == QMessageBox.Yes:
            self.store.delete_conversation(conv_id)
            self.refresh()
            self.conversation_deleted.emit(conv_id)
