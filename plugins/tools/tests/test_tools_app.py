"""The tools plugin in the app: offering tools per conversation, policies, folders, the CLI,
the real model calling the calculator through the grammar, and the window's approval flow."""

from __future__ import annotations

import json
import os
import re
import sys
from decimal import Decimal, InvalidOperation

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

QUESTION = "What is 17.5% of 2,340?"


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context

    ctx = build_context(paths)
    ctx.settings.set("model.context_length", 2048)
    ctx.settings.set("generation.temperature", 0.0)
    ctx.settings.set("generation.max_tokens", 60)
    yield ctx
    ctx.close()


@pytest.fixture
def tools_state(context):
    from desktop_app_tools import state

    assert state.context is context.plugin_context("tools")
    return state


def test_built_in_tools_are_registered_with_their_defaults(tools_state):
    tools = tools_state.all_tools()
    for name in ("calculator", "current_time", "convert_units", "list_folder", "read_file", "search_documents"):
        assert name in tools, name
    assert tools["calculator"].source == "tools" and tools["search_documents"].source == "local_docs"
    assert tools_state.policy("calculator") == "allow"
    assert tools_state.policy("read_file") == "ask"
    assert tools_state.policy("search_documents") == "ask"
    schema = tools["calculator"].parameters
    assert schema["required"] == ["expression"] and schema["properties"]["expression"]["type"] == "string"


def states(text, result):
    """Whether ``text`` gives the number ``result`` (as 409.5, 409.50 or 1,234.5), or the text itself."""
    try:
        wanted = Decimal(result)
    except InvalidOperation:
        return result in text
    return any(Decimal(n.replace(",", "")) == wanted for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", text))


def computed(call):
    """A finished calculator call's result is what the calculator gives for its expression."""
    from desktop_app_tools.builtin import calculator

    return call["result"] == calculator(call["arguments"]["expression"])


def _turn(conversation_id, **plugin_options):
    from desktop_app.api import Turn

    return Turn(conversation_id, QUESTION, plugin_options=plugin_options)


def test_tools_are_off_until_chosen_and_the_choice_is_remembered(context, tools_state):
    from desktop_app_tools import prepare_turn

    conversation = context.store.create_conversation("t")
    turn = _turn(conversation.id)
    prepare_turn(turn)
    assert turn.tools == []
    # The panel's choice for a new chat sticks to the conversation once it is used.
    tools_state.set_offered(None, ["calculator", "current_time"])
    turn = _turn(conversation.id)
    prepare_turn(turn)
    assert [t.name for t in turn.tools] == ["calculator", "current_time"]
    tools_state.set_offered(None, [])
    turn = _turn(conversation.id)
    prepare_turn(turn)
    assert [t.name for t in turn.tools] == ["calculator", "current_time"]
    assert turn.options.tool_choice == "auto" and turn.options.max_tool_rounds == 4
    # The command line's choice wins and is remembered; "none" switches tools off.
    turn = _turn(conversation.id, tools={"tools": ["convert_units", "nonexistent"], "tool_choice": "required"})
    prepare_turn(turn)
    assert [t.name for t in turn.tools] == ["convert_units"]
    assert turn.options.tool_choice == "required"
    assert any(e.kind == "note" and "nonexistent" in e.content for e in turn.trace)
    turn = _turn(conversation.id, tools={"tools": ["none"]})
    prepare_turn(turn)
    assert turn.tools == []


def test_policies_decide_and_denied_tools_are_not_offered(context, tools_state):
    from desktop_app_tools import approve_tool_call, prepare_turn, remember_tool_policy

    assert approve_tool_call({"tool": "calculator", "arguments": {}}) is True
    assert approve_tool_call({"tool": "read_file", "arguments": {}}) == "ask"
    tools_state.set_policy("calculator", "deny")
    assert approve_tool_call({"tool": "calculator", "arguments": {}}) is False
    remember_tool_policy("read_file", "allow")
    assert approve_tool_call({"tool": "read_file", "arguments": {}}) is True
    conversation = context.store.create_conversation("t")
    tools_state.set_offered(conversation.id, ["calculator", "read_file"])
    turn = _turn(conversation.id)
    prepare_turn(turn)
    assert [t.name for t in turn.tools] == ["read_file"]
    with pytest.raises(ValueError, match="Unknown policy"):
        tools_state.set_policy("calculator", "sometimes")
    saved = json.loads(tools_state.config_file.read_text())
    assert saved["policies"] == {"calculator": "deny", "read_file": "allow"}


def test_granted_folders_persist_and_confine_the_file_tools(context, tools_state, tmp_path):
    docs = tmp_path / "granted"
    docs.mkdir()
    (docs / "note.txt").write_text("The boat leaves at 9.\n")
    (tmp_path / "secret.txt").write_text("nope")
    tools = tools_state.all_tools()
    with pytest.raises(ValueError, match="[Gg]rant"):
        tools["read_file"].function(path="note.txt")
    tools_state.grant(docs)
    assert tools_state.granted_folders() == [docs.resolve()]
    assert "The boat leaves at 9." in tools["read_file"].function(path="note.txt")
    with pytest.raises((ValueError, PermissionError)):
        tools["read_file"].function(path="../secret.txt")
    tools_state.revoke(docs)
    assert tools_state.granted_folders() == []
    with pytest.raises(ValueError, match="not a folder"):
        tools_state.grant(tmp_path / "missing")


def test_a_damaged_tools_file_is_kept_aside(paths):
    from desktop_app.context import build_context

    (paths.data_dir / "tools.json").write_text("{ not json")
    ctx = build_context(paths)
    try:
        from desktop_app_tools import state

        assert state.policy("calculator") == "allow"
        state.set_policy("calculator", "ask")
        (kept,) = paths.data_dir.glob("tools.json.corrupt-*")
        assert kept.read_text() == "{ not json"
        assert json.loads((paths.data_dir / "tools.json").read_text())["policies"] == {"calculator": "ask"}
    finally:
        ctx.close()


def test_cli_lists_sets_policies_and_calls_tools(paths, capsys, tmp_path):
    from desktop_app.cli import main

    assert main(["tools", "list"]) == 0
    out = capsys.readouterr().out
    assert "calculator" in out and "allow" in out and "read_file" in out
    assert main(["tools", "policy", "calculator", "ask"]) == 0
    assert main(["tools", "call", "calculator", '{"expression": "17.5% of 2,340"}']) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "409.5"
    assert main(["tools", "call", "calculator", '{"expression": "1/0"}']) == 1
    assert "calculator:" in capsys.readouterr().err
    assert main(["tools", "call", "calculator", '{"expression": "__import__(1)"}']) == 1
    assert "'expression' has characters or a form it cannot have" in capsys.readouterr().err
    assert main(["tools", "call", "calculator", "{oops"]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["tools", "grant", str(tmp_path)]) == 0
    assert main(["tools", "folders"]) == 0
    assert str(tmp_path.resolve()) in capsys.readouterr().out


@pytest.mark.model
def test_the_real_model_calls_the_calculator_through_the_grammar(context):
    """SmolLM2-135M, greedy: the grammar makes its call well-formed; the result reaches the answer."""
    from desktop_app.core.chat import TurnFinished

    context.load_model()
    conversation = context.store.create_conversation("math")
    outcome = context.chat.send(conversation.id, QUESTION,
                                plugin_options={"tools": {"tools": ["calculator"], "tool_choice": "required"}})
    assert isinstance(outcome, TurnFinished)
    trace = context.store.get_trace(outcome.message.id)
    calls = [e["content"] for e in trace["entries"] if e["kind"] == "tool_call"]
    assert calls, "the model made no call"
    first = calls[0]
    assert first["tool"] == "calculator" and first["decision"] == "allowed" and first["decided_by"] == "policy"
    assert isinstance(first["arguments"]["expression"], str)
    # Which expression the greedy model writes (e.g. "17.5% of 2,340" or "0.175 * 2340") is its
    # choice, and a near tie can flip on another CPU: check the result of the call it made.
    answered = [c for c in calls if not c["error"]]
    assert answered, calls
    result = answered[-1]["result"]
    assert computed(answered[-1]), answered[-1]
    assert states(outcome.message.content, result), (outcome.message.content, result)
    assert outcome.message.status == "complete"
    assert f"Tool result from calculator: {result}" in trace["prompt"]


@pytest.mark.model
def test_cli_chat_with_tools_refuses_calls_it_cannot_ask_about(paths, capsys, monkeypatch):
    import io

    from desktop_app.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    main(["tools", "policy", "calculator", "ask"])
    capsys.readouterr()
    code = main(["chat", "--temperature", "0", "--max-tokens", "40", "--tools", "calculator",
                 "--tool-choice", "required", QUESTION])
    assert code == 0
    err = capsys.readouterr().err
    assert "needs your approval, but there is no terminal" in err
    assert "[tool calculator" in err and "denied" in err
    code = main(["chat", "--temperature", "0", "--max-tokens", "40", "--tools", "calculator",
                 "--tool-choice", "required", "--allow-tools", QUESTION])
    captured = capsys.readouterr()
    # The call ran and its result was shown (what the model asked to compute is its choice).
    ran = re.search(r"\[tool calculator (\{.*\}) -> (.+) \(\d+\.\d ms\)\]", captured.err)
    assert code == 0 and ran, captured.err
    assert computed({"arguments": json.loads(ran[1]), "result": ran[2]})


def open_window(qtbot, context):
    """The window on ``context``, shown, once its model has loaded."""
    from desktop_app.ui.app import create_window

    window = create_window(context)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: context.engine.loaded and not window.model_loading, timeout=60_000)
    return window


def ask_until_approval(qtbot, window):
    """Send the question and wait for the approval dialog of its calculator call."""
    from PySide6.QtCore import Qt

    qtbot.keyClicks(window.composer.edit, QUESTION)
    qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: window.approval_dialog is not None, timeout=60_000)


@pytest.mark.model
def test_in_the_window_the_user_approves_a_call_and_sees_it(qtbot, context):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QDockWidget

    from desktop_app.ui.chat_view import ToolCallsView
    from desktop_app.ui.tool_approval import ToolApprovalDialog
    from desktop_app_tools import state
    from desktop_app_tools.ui import ToolsPanel

    state.set_policy("calculator", "ask")
    context.settings.set("plugins.tools.tool_choice", "required")
    window = open_window(qtbot, context)
    try:
        dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Tools"][0]
        dock.show()
        panel = window.findChild(ToolsPanel)
        item = panel.tree.findItems("calculator", Qt.MatchExactly | Qt.MatchRecursive)[0]
        item.setCheckState(0, Qt.Checked)
        assert state.selection == ["calculator"]
        assert panel.choice.currentData() == "required"
        ask_until_approval(qtbot, window)
        dialog = window.approval_dialog
        assert isinstance(dialog, ToolApprovalDialog)
        assert json.loads(dialog.arguments.toPlainText())["expression"]
        with qtbot.waitSignal(window.answer_finished, timeout=60_000):
            dialog.allow_button.click()
        answer = [w for w in window.chat_view.widgets if w.message.role == "assistant"][-1]
        view = answer.findChild(ToolCallsView)
        assert view is not None and view.calls[0]["decision"] == "approved"
        # The model's expression is its choice; the answer and the details show the call's result.
        result = view.calls[0]["result"]
        assert computed(view.calls[0]) and states(answer.message.content, result)
        assert view.details.isHidden()
        view.toggle.click()
        assert not view.details.isHidden() and result in view.details.text()
        # The conversation remembers its tools.
        assert state.offered(window.current_conversation) == (["calculator"], True)
    finally:
        window.close()


@pytest.mark.model
def test_stop_refuses_a_pending_approval(qtbot, context):
    from desktop_app_tools import state

    state.set_policy("calculator", "ask")
    state.set_offered(None, ["calculator"])
    context.settings.set("plugins.tools.tool_choice", "required")
    window = open_window(qtbot, context)
    try:
        ask_until_approval(qtbot, window)
        with qtbot.waitSignal(window.answer_finished, timeout=60_000):
            window.stop()
        answer = [w for w in window.chat_view.widgets if w.message.role == "assistant"][-1]
        trace = context.store.get_trace(answer.message.id)
        calls = [e["content"] for e in trace["entries"] if e["kind"] == "tool_call"]
        assert calls[0]["decision"] == "denied"
    finally:
        window.close()


def test_mcp_tools_from_mcp_json_sit_next_to_the_built_in_ones_and_need_approval(paths):
    """The reference time server, configured like other desktop apps do, through the whole turn."""
    from desktop_app.context import build_context
    from desktop_app.core.chat import ChatService, TurnFinished
    from desktop_app.testing import FakeEngine

    server = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
    (paths.data_dir / "mcp.json").write_text(json.dumps({"mcpServers": {"time": server}}))
    ctx = build_context(paths)
    try:
        from desktop_app_tools import state

        assert state.mcp is not None  # started in the background by app_started
        # The client itself gives a server 60 s (DEFAULT_CONNECT_TIMEOUT); a cold start on a slow
        # machine may need most of it.
        assert state.mcp.wait_ready("time", 120).state == "ready"
        tools = state.all_tools()
        assert {"time.get_current_time", "time.convert_time", "calculator"} <= set(tools)
        assert tools["time.get_current_time"].source == "mcp:time"
        assert state.policy("time.get_current_time") == "ask"
        engine = FakeEngine().enqueue(
            json.dumps({"tool": "time.get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}),
            "It is morning in Tokyo.")
        service = ChatService(ctx.store, engine, ctx.settings, ctx.plugins.hook)
        conversation = ctx.store.create_conversation("t")
        asked = []
        outcome = service.send(conversation.id, "What time is it in Tokyo?",
                               plugin_options={"tools": {"tools": ["time.get_current_time"]}},
                               approve_tool=lambda call, tool: asked.append(tool.source) or True)
        assert isinstance(outcome, TurnFinished) and asked == ["mcp:time"]
        (call,) = [e["content"] for e in ctx.store.get_trace(outcome.message.id)["entries"]
                   if e["kind"] == "tool_call"]
        assert call["decision"] == "approved" and call["source"] == "mcp:time"
        assert json.loads(call["result"])["timezone"] == "Asia/Tokyo"
    finally:
        ctx.close()
    assert state.mcp is None  # closing the app stopped the servers


def test_decorated_time_zone_answers_of_small_models_still_resolve():
    from desktop_app_tools import builtin

    assert "Asia/Tokyo" in builtin.current_time("UTC-07 (Tokyo)")
    assert "America/New_York" in builtin.current_time("US/Eastern (New York)")
    with pytest.raises(ValueError, match="Unknown time zone"):
        builtin.current_time("Atlantis (nowhere)")


@pytest.mark.model
def test_every_built_in_tool_grammar_compiles_in_llama_cpp(context, tools_state):
    """The grammars of all built-in tools, in every mode, are accepted by llama.cpp itself."""
    from desktop_app.core.tool_protocol import PromptProtocol
    from desktop_app.core.turn import ChatMessage, GenerationOptions

    context.load_model()
    protocol = PromptProtocol([t for t in tools_state.all_tools().values()])
    for grammar in (protocol.grammar(required=True), protocol.grammar(required=False), protocol.text_grammar()):
        events = list(context.engine.stream_chat([ChatMessage("user", "Hi")],
                                                 GenerationOptions(temperature=0, max_tokens=2, grammar=grammar)))
        assert type(events[-1]).__name__ == "DoneEvent", events[-1]


def test_a_long_file_is_read_in_pages_that_fit_one_result(context, tools_state, tmp_path):
    from desktop_app.api import run_tool

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "long.txt").write_text("".join(f"line {i} of the long file\n" for i in range(1, 1001)))
    tools_state.grant(folder)
    read = tools_state.all_tools()["read_file"]
    result, error, _ = run_tool(read, {"path": "long.txt"})
    assert not error and "[cut:" not in result
    last = max(int(line.split()[1]) for line in result.splitlines() if line.startswith("line "))
    assert f"start_line={last + 1}" in result  # the next page starts right after what was shown
    second, _, _ = run_tool(read, {"path": "long.txt", "start_line": last + 1})
    assert f"line {last + 1} of the long file" in second
