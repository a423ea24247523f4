"""The conversation: one widget per message, Markdown rendered, the streaming answer coalesced.

While an answer streams, tokens are appended to a buffer and the message is re-rendered by
a timer at most ~30 times a second, never once per token, so long answers stay smooth.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.store import Message
from desktop_app.ui.markdown import render_markdown

__all__ = ["ChatView", "MessageWidget", "RENDER_INTERVAL_MS"]

#: The streaming answer is re-rendered at most this often (~30 per second).
RENDER_INTERVAL_MS = 33


class MarkdownView(QTextBrowser):
    """A read-only Markdown view that grows to fit its content (the chat scrolls, not it)."""

    code_copied = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setFrameShape(QFrame.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setWordWrapMode(QTextOption.WrapAtWordBoundaryOrAnywhere)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.anchorClicked.connect(self._on_anchor_clicked)
        self.document().contentsChanged.connect(self._fit)
        self.code_blocks: list[str] = []
        self.markdown = ""

    def loadResource(self, kind: int, url: QUrl):  # noqa: N802 - Qt override
        """Never load anything from disk or elsewhere (the Markdown renderer emits no images anyway)."""
        return None

    def set_markdown(self, text: str, dark: bool, remember: bool = True) -> None:
        """Render ``text`` as Markdown (``remember``: see :func:`render_markdown`)."""
        self.markdown = text
        rendered = render_markdown(text, dark, remember)
        self.code_blocks = rendered.code_blocks
        self.setHtml(rendered.html)
        self._fit()

    def _fit(self) -> None:
        self.document().setTextWidth(self.viewport().width())
        height = int(self.document().size().height()) + 4
        if self.height() != height:
            self.setFixedHeight(height)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._fit()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(400, self.height())

    @Slot(QUrl)
    def _on_anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == "copy-code":
            index = int(url.path() or url.toString().split(":", 1)[1])
            if 0 <= index < len(self.code_blocks):
                QGuiApplication.clipboard().setText(self.code_blocks[index])
                self.code_copied.emit(index)
        elif url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)


class SourcesView(QLabel):
    """The passages an answer was given, numbered as the model cites them; a click opens the file."""

    def __init__(self, sources: list[dict[str, Any]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sources")
        self.setAccessibleName("Sources")
        self.setWordWrap(True)
        self.setTextFormat(Qt.RichText)
        self.setOpenExternalLinks(False)
        self.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.linkActivated.connect(lambda url: QDesktopServices.openUrl(QUrl(url)))
        import html as _html

        rows = []
        for number, source in enumerate(sources, 1):
            meta = source.get("metadata") or {}
            path = meta.get("path")
            label = _html.escape(str(source.get("source", "")))
            link = f'<a href="{QUrl.fromLocalFile(path).toString()}">{label}</a>' if path else label
            snippet = _html.escape(" ".join(str(source.get("text", "")).split())[:160])
            score = source.get("score")
            score_text = f" · score {score:.3f}" if isinstance(score, (int, float)) else ""
            rows.append(f"<b>[{number}]</b> {link}{score_text}<br><span style='color:gray'>{snippet}…</span>")
        self.setText("<b>Sources</b><br>" + "<br>".join(rows))
        self.sources = sources


class ToolCallsView(QFrame):
    """The tool calls behind an answer: one line each, with arguments and result on a click."""

    def __init__(self, calls: list[dict[str, Any]], parent: QWidget | None = None):
        super().__init__(parent)
        import html as _html
        import json as _json

        self.setObjectName("toolCalls")
        self.setAccessibleName("Tool calls")
        self.calls = calls
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(0)
        failed = sum(1 for c in calls if c.get("error"))
        summary = f"Used {len(calls)} tool call{'s' if len(calls) != 1 else ''}"
        if failed:
            summary += f" ({failed} without a result)"
        self.toggle = QToolButton(self)
        self.toggle.setObjectName("toolCallsToggle")
        self.toggle.setText(f"▸ {summary}")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.toggle.setAutoRaise(True)
        self.toggle.setAccessibleName(summary)
        layout.addWidget(self.toggle)
        rows = []
        for call in calls:
            arguments = _html.escape(_json.dumps(call.get("arguments", {}), ensure_ascii=False))
            decision = call.get("decision", "")
            who = call.get("decided_by") or ""
            how = {"approved": "approved by you", "allowed": "allowed" + (f" by {who}" if who else ""),
                   "denied": "denied" + (f" ({who})" if who else ""), "invalid": "not a valid call"}.get(decision, decision)
            result = call.get("error") and f"<span style='color:#c0392b'>{_html.escape(call['error'])}</span>" \
                or _html.escape(str(call.get("result", ""))[:600])
            source = _html.escape(call.get("source") or "")
            rows.append(
                f"<b>{_html.escape(str(call.get('tool')))}</b>"
                f"<span style='color:gray'> · {how} · {call.get('duration_ms', 0):.0f} ms"
                f"{' · ' + source if source else ''}</span><br>"
                f"<code>{arguments}</code><br>→ {result}"
            )
        self.details = QLabel("<br><br>".join(rows), self)
        self.details.setObjectName("toolCallDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.RichText)
        self.details.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.details.hide()
        layout.addWidget(self.details)
        self.toggle.toggled.connect(self._on_toggle_toggled)

    @Slot(bool)
    def _on_toggle_toggled(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.toggle.setText(("▾ " if shown else "▸ ") + self.toggle.text()[2:])


class MessageWidget(QFrame):
    """One message with its actions.

    Signals:
        edit_requested(object): the user wants to edit this (user) message.
        regenerate_requested(): answer the last question again.
        inspect_requested(int): show the prompt and trace of this answer.
        branch_requested(int): show the branch of this sibling message id.
    """

    edit_requested = Signal(object)
    regenerate_requested = Signal()
    inspect_requested = Signal(int)
    branch_requested = Signal(int)

    def __init__(self, message: Message, dark: bool, *, siblings: list[int] | None = None,
                 last: bool = False, trace: list[dict[str, Any]] | None = None, parent: QWidget | None = None,
                 actions: list[tuple[str, Callable[[Message], None]]] | None = None):
        super().__init__(parent)
        self.message = message
        self.dark = dark
        is_user = message.role == "user"
        self.setObjectName("userMessage" if is_user else "assistantMessage")
        self.setFrameShape(QFrame.StyledPanel)
        self.setAccessibleName("Your message" if is_user else "Assistant's answer")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(2)
        header = QHBoxLayout()
        who = "You" if is_user else "Assistant"
        self.title = QLabel(f"<b>{who}</b>")
        header.addWidget(self.title)
        self.status = QLabel()
        self.status.setObjectName("messageStatus")
        header.addWidget(self.status)
        header.addStretch(1)
        siblings = siblings or [message.id]
        if len(siblings) > 1:
            index = siblings.index(message.id)
            previous = QToolButton(text="◀", toolTip="Previous version", accessibleName="Previous version")
            previous.setEnabled(index > 0)
            previous.clicked.connect(lambda: self.branch_requested.emit(siblings[index - 1]))
            following = QToolButton(text="▶", toolTip="Next version", accessibleName="Next version")
            following.setEnabled(index < len(siblings) - 1)
            following.clicked.connect(lambda: self.branch_requested.emit(siblings[index + 1]))
            self.branch_label = QLabel(f"{index + 1}/{len(siblings)}")
            header.addWidget(previous)
            header.addWidget(self.branch_label)
            header.addWidget(following)
        self.copy_button = self._button(header, "Copy", "Copy this message")
        self.copy_button.clicked.connect(self._copy)
        if is_user:
            self.edit_button = self._button(header, "Edit", "Edit and resend this message")
            self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message))
        else:
            self.inspect_button = self._button(header, "Prompt", "Show the exact prompt and what each plugin added")
            self.inspect_button.clicked.connect(lambda: self.inspect_requested.emit(self.message.id))
            if last:
                self.regenerate_button = self._button(header, "Regenerate", "Answer this question again")
                self.regenerate_button.clicked.connect(self.regenerate_requested.emit)
        self.more_button: QToolButton | None = None
        if actions:
            # Plugins' entries for this message (e.g. "Add to task set…"), in one menu.
            self.more_button = self._button(header, "More", "More things to do with this message")
            menu = QMenu(self.more_button)
            for text, run in actions:
                menu.addAction(text, lambda run=run: run(self.message))
            self.more_button.setMenu(menu)
            self.more_button.setPopupMode(QToolButton.InstantPopup)
        layout.addLayout(header)
        self.body = MarkdownView(self)
        self.body.setAccessibleName(f"{who} text")
        layout.addWidget(self.body)
        trace = trace or []
        calls = [e["content"] for e in trace if e.get("kind") == "tool_call" and isinstance(e.get("content"), dict)]
        if calls:
            layout.addWidget(ToolCallsView(calls, self))
        sources = [e["content"] for e in trace if e.get("kind") == "context" and isinstance(e.get("content"), dict)]
        if sources:
            layout.addWidget(SourcesView(sources, self))
        samples = message.stats.get("samples") or []
        self.samples_view: MarkdownView | None = None
        if samples:
            # A strategy (e.g. self-consistency) produced several answers: let the user see them all.
            self.samples_button = self._button(header, f"Samples ({len(samples)})", "Show every sampled answer")
            self.samples_button.setCheckable(True)
            self.samples_view = MarkdownView(self)
            self.samples_view.setAccessibleName("Sampled answers")
            votes = message.stats.get("votes") or {}
            vote_text = ", ".join(f"“{k}”: {v}" for k, v in votes.items())
            parts = [f"**Votes:** {vote_text}"] if vote_text else []
            parts += [f"**Sample {i}**\n\n{text}" for i, text in enumerate(samples, 1)]
            self.samples_view.set_markdown("\n\n---\n\n".join(parts), dark)
            self.samples_view.hide()
            layout.addWidget(self.samples_view)
            self.samples_button.toggled.connect(self.samples_view.setVisible)
        self.set_text(message.content)
        self.set_status(message.status, message.stats)

    @staticmethod
    def _button(layout: QHBoxLayout, text: str, tip: str) -> QToolButton:
        button = QToolButton(text=text, toolTip=tip)
        button.setAccessibleName(tip)
        button.setAutoRaise(True)
        layout.addWidget(button)
        return button

    def set_text(self, text: str, remember: bool = True) -> None:
        """Show ``text`` (Markdown); ``remember`` False for text that is still being written."""
        self.message.content = text
        self.body.set_markdown(text, self.dark, remember)

    def set_status(self, status: str, stats: dict[str, Any] | None = None, *, streaming: bool = False) -> None:
        """Show whether the answer is complete, being written, stopped or failed."""
        self.message.status = status
        stats = stats or {}
        if status == "incomplete":
            text = "writing…" if streaming else "stopped — partial answer"
        elif status == "error":
            text = "failed: " + str(stats.get("error", "unknown error"))
        else:
            text = ""
        self.status.setText(f"<i>{text}</i>" if text else "")

    def set_activity(self, text: str) -> None:
        """Say what the answer is waiting for (e.g. a tool call) while it is being written."""
        import html as _html

        self.status.setText(f"<i>{_html.escape(text)}</i>")

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.message.content)


#: Messages built when a conversation opens (more than a window shows); older ones are built
#: OLDER_PER_SCROLL at a time as the user scrolls up to them.
FIRST_SHOWN = 6
OLDER_PER_SCROLL = 6
FILL_DELAY_MS = 120


class ChatView(QScrollArea):
    """The messages of the current branch, newest at the bottom.

    Signals are forwarded from the message widgets (see :class:`MessageWidget`).
    """

    edit_requested = Signal(object)
    regenerate_requested = Signal()
    inspect_requested = Signal(int)
    branch_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setAccessibleName("Conversation")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._layout = QVBoxLayout(self._inner)
        self._layout.setContentsMargins(12, 12, 12, 12)
        self._layout.setSpacing(10)
        self._layout.addStretch(1)
        self.setWidget(self._inner)
        self.dark = False
        self.widgets: list[MessageWidget] = []
        #: The pages older messages were built in, OLDER_PER_SCROLL to a page (see _show_older).
        self._pages: list[QWidget] = []
        #: Messages of the conversation not built yet, oldest first (see :meth:`set_messages`).
        self._older: list[tuple[Any, ...]] = []
        #: Plugins' message actions: (text, run(message), roles), see ``register_message_actions``.
        self.message_actions: list[tuple[str, Callable[[Message], None], tuple[str, ...]]] = []
        self._placeholder = QLabel("Ask anything. Your conversations stay on this computer.")
        self._placeholder.setAlignment(Qt.AlignCenter)
        self._placeholder.setObjectName("placeholder")
        self._layout.insertWidget(0, self._placeholder)
        # Streaming state
        self._stream_widget: MessageWidget | None = None
        self._stream_text = ""
        self._dirty = False
        self.render_count = 0
        self._timer = QTimer(self)
        self._timer.setInterval(RENDER_INTERVAL_MS)
        self._timer.timeout.connect(self._flush)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self._from_bottom: int | None = None
        self._settling = False
        # One timer, stopped by clear(): a fill scheduled for the conversation shown before
        # must not build messages of the next one before it is painted.
        self._fill_timer = QTimer(self)
        self._fill_timer.setSingleShot(True)
        self._fill_timer.setInterval(FILL_DELAY_MS)
        self._fill_timer.timeout.connect(self._fill_view)

    def clear(self) -> None:
        """Remove every message."""
        self._timer.stop()
        self._fill_timer.stop()
        self._older = []  # a conversation still being filled in stops filling in
        self._stream_widget = None
        for widget in self.widgets:
            # Hidden and deleted later, not reparented: taking a widget out of a window with a
            # style sheet re-styles it (70 ms for 80 messages, before the next conversation shows).
            widget.hide()
            self._layout_of(widget).removeWidget(widget)
            widget.deleteLater()
        for page in self._pages:
            page.hide()
            self._layout.removeWidget(page)
            page.deleteLater()
        self.widgets, self._pages = [], []
        self._placeholder.show()

    def set_messages(self, messages: list[Message],
                     siblings: dict[int, list[int]] | Callable[[Message], list[int] | None] | None = None,
                     traces: dict[int, list[dict[str, Any]]] | Callable[[Message], Any] | None = None) -> None:
        """Show ``messages`` (one branch, oldest first); ``siblings`` gives each message's
        alternatives and ``traces`` each answer's trace entries (sources, tool calls): dicts by
        message id, or functions of the message, asked only when the message is shown.

        Newest first: the messages a window shows are built at once; older ones are built
        when the user scrolls up to them, so even a conversation of thousands of messages opens
        at once and costs only what is read.
        """
        self.clear()
        alternatives = siblings if callable(siblings) else (lambda m, d=siblings or {}: d.get(m.id))
        trace_of = traces if callable(traces) else (lambda m, d=traces or {}: d.get(m.id))
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        self._older = [(m, alternatives, i == last_assistant, trace_of) for i, m in enumerate(messages)]
        self._show_older(FIRST_SHOWN)
        # The newest message at the bottom once the layout has room for them (_on_range_changed).
        self._from_bottom = 0
        self.scroll_to_bottom()

    @property
    def loading(self) -> bool:
        """Whether older messages of the conversation are not built yet (they come as the user scrolls up)."""
        return bool(self._older)

    def finish_loading(self) -> None:
        """Build every message still to be filled in, now (for tests and exports)."""
        while self._older:
            self._show_older(len(self._older))

    def _show_older(self, count: int = OLDER_PER_SCROLL) -> None:
        """Build the ``count`` newest messages not built yet, above those shown."""
        if not self._older:
            return
        chunk, self._older = self._older[-count:], self._older[:-count]
        if chunk and not self.widgets:
            self._placeholder.hide()
        bar = self.verticalScrollBar()
        from_bottom = bar.maximum() - bar.value()
        # The messages go into a page of their own, above the rest: a new page makes the view lay
        # out its pages, whose sizes Qt keeps, not every message built so far (scrolling up
        # through 1,000 messages stalled 100-130 ms a step when each was laid out again).
        page = QWidget(self._inner)
        page_layout = QVBoxLayout(page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        page_layout.setSpacing(self._layout.spacing())
        made = [self._make(m, alternatives(m), last, trace_of(m), parent=page)
                for m, alternatives, last, trace_of in chunk]
        for widget in made:
            page_layout.addWidget(widget)
        self._layout.insertWidget(1, page)  # after the (hidden) placeholder, above the rest
        self._pages.append(page)
        self.widgets[0:0] = made
        if len(self.widgets) > len(made):
            # Keep what the user looks at in place while messages appear above it: once the
            # layout has made room for them (see _on_range_changed).
            self._from_bottom = from_bottom
        # Messages too short to fill the view leave nothing to scroll up to: build more, once
        # the layout (and the first paint) has happened (see _fill_view).
        self._fill_timer.start()

    @Slot()
    def _fill_view(self) -> None:
        # Messages too short to fill the view, or a view left at its top (where scrolling up
        # moves nothing, so no scroll event comes): build more.
        if self._near_top(self.verticalScrollBar().value()):
            self._show_older()

    def _near_top(self, value: int) -> bool:
        """Whether older messages wait to be built and the view at ``value`` is within a screen of the top."""
        return bool(self._older) and value < self.viewport().height()

    @Slot(int, int)
    def _on_range_changed(self, _low: int, high: int) -> None:
        # The layout settles in several steps: the view stays at the same distance from the
        # bottom through all of them, until the user scrolls.
        if self._from_bottom is not None:
            self._scroll_to(high - self._from_bottom)
        if self._near_top(self.verticalScrollBar().value()):
            self._fill_timer.start()

    @Slot(int)
    def _on_scrolled(self, value: int) -> None:
        # Near the top: the older messages come in before the user reaches the edge.
        if self._settling:
            return  # moved by the view itself, not the user
        self._from_bottom = None  # where the user scrolled to rules now
        if self._near_top(value):
            self._show_older()

    def add_message(self, message: Message, siblings: list[int] | None = None, last: bool = False,
                    trace: list[dict[str, Any]] | None = None) -> MessageWidget:
        """Append one message widget."""
        self._placeholder.hide()
        widget = self._make(message, siblings, last, trace)
        self._layout.insertWidget(self._layout.count() - 1, widget)
        self.widgets.append(widget)
        return widget

    def _make(self, message: Message, siblings: list[int] | None, last: bool,
              trace: list[dict[str, Any]] | None = None, parent: QWidget | None = None) -> MessageWidget:
        actions = [(text, run) for text, run, roles in self.message_actions if message.role in roles]
        widget = MessageWidget(message, self.dark, siblings=siblings, last=last, trace=trace,
                               parent=parent or self._inner, actions=actions)
        widget.edit_requested.connect(self.edit_requested)
        widget.regenerate_requested.connect(self.regenerate_requested)
        widget.inspect_requested.connect(self.inspect_requested)
        widget.branch_requested.connect(self.branch_requested)
        return widget

    def replace_message(self, old: MessageWidget, message: Message, siblings: list[int] | None = None,
                        last: bool = False, trace: list[dict[str, Any]] | None = None) -> MessageWidget:
        """Swap one message widget for a fresh one (e.g. when an answer is finished), in place."""
        layout = self._layout_of(old)
        index = layout.indexOf(old)
        widget = self._make(message, siblings, last, trace, parent=old.parentWidget())
        layout.insertWidget(index, widget)
        self.widgets[self.widgets.index(old)] = widget
        old.setParent(None)
        old.deleteLater()
        return widget

    def _layout_of(self, widget: QWidget) -> QVBoxLayout:
        """The layout holding a message widget: its page's, or the view's own (new messages)."""
        parent = widget.parentWidget()
        return parent.layout() if parent is not None and parent is not self._inner else self._layout

    # -- streaming -------------------------------------------------------------------------
    def begin_stream(self, message: Message) -> MessageWidget:
        """Add the answer being written; tokens go to :meth:`append_text`."""
        widget = self.add_message(message)
        widget.set_status("incomplete", streaming=True)
        self._stream_widget = widget
        self._stream_text = message.content
        self._dirty = False
        self._timer.setInterval(RENDER_INTERVAL_MS)
        self._timer.start()
        self.scroll_to_bottom()
        return widget

    def show_activity(self, text: str) -> None:
        """Show what the answer being written waits for (a tool call, an approval)."""
        if self._stream_widget is not None:
            self._stream_widget.set_activity(text)

    def append_text(self, piece: str) -> None:
        """Add streamed text; it is shown at the next render tick."""
        if self._stream_widget is None:
            return
        self._stream_text += piece
        self._dirty = True

    def end_stream(self, text: str | None = None) -> MessageWidget | None:
        """Stop the render timer and return the widget that was streaming (its text is final)."""
        widget = self._stream_widget
        if widget is not None and text is not None:
            self._stream_text = text
        self._timer.stop()
        self._stream_widget = None
        return widget

    @Slot()
    def _flush(self) -> None:
        if not self._dirty or self._stream_widget is None:
            return
        self._dirty = False
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 40
        started = time.perf_counter()
        self._stream_widget.set_text(self._stream_text, remember=False)
        self.render_count += 1
        # A long answer takes longer to render: render it less often, so rendering never takes
        # more than about a fifth of the GUI thread (and of the time the answer is written in).
        spent_ms = (time.perf_counter() - started) * 1000
        self._timer.setInterval(max(RENDER_INTERVAL_MS, int(spent_ms * 4)))
        if at_bottom:  # follow the answer unless the user scrolled up to read
            self.scroll_to_bottom()

    @property
    def streaming_text(self) -> str:
        """The answer text received so far (rendered or not)."""
        return self._stream_text

    def scroll_to_bottom(self) -> None:
        """Scroll to the newest message once the layout has settled."""
        QTimer.singleShot(0, lambda: self._scroll_to(self.verticalScrollBar().maximum()))

    def _scroll_to(self, value: int) -> None:
        """Move the view without it counting as the user's scrolling (see _on_scrolled)."""
        self._settling = True
        try:
            self.verticalScrollBar().setValue(value)
        finally:
            self._settling = False
