"""Tools: the model may compute, tell the time, convert units, read the user's granted folders
and use the tools of MCP servers. A built-in Parley plugin.

Which tools a turn offers: the turn's own choice (``parley chat --tools a,b``, remembered for
the conversation), else the conversation's remembered choice, else none: tools are off until
the user switches them on for a conversation in the Tools panel.

Each tool has an approval policy: "ask" (the default for tools that read files or run
other programs), "allow" (the default for pure ones like the calculator) or "deny". The
policies and the granted folders are kept in ``tools.json`` in the data folder; MCP servers
are configured in ``mcp.json`` next to it, in the format other desktop apps use.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from desktop_app.api import (
    Option,
    Tool,
    ToolError,
    Turn,
    atomic_write_text,
    ConversationChoice,
    PluginContext,
    check_tool,
    hookimpl,
    move_aside,
    MAX_RESULT_CHARS,
    tool_from_function,
)

__version__ = "0.1.0"
__all__ = ["POLICIES", "PLUGIN", "state"]

log = logging.getLogger(__name__)

PLUGIN = "tools"
POLICIES = ("ask", "allow", "deny")
#: What a calculator expression may contain (letters for functions, "of" and constants).
EXPRESSION_PATTERN = "^[0-9A-Za-z .,%()*/^+×÷−-]+$"
#: The arithmetic a model may write in a calculator call (a subset of what the calculator
#: reads): numbers with optional thousands separators and percent signs, operators, "of",
#: parentheses, common functions and constants. No leading "." and no prose.
EXPRESSION_GRAMMAR = {
    "calc-expr": 'calc-term (" "? calc-op " "? calc-term){0,24}',
    "calc-term": '"-"? (calc-num "%"? | calc-fn "(" calc-expr (", " calc-expr)? ")" | "(" calc-expr ")" | "pi")',
    "calc-num": '([0-9]{1,3} ("," [0-9]{3}){1,4} | [0-9]{1,15}) ("." [0-9]{1,10})?',
    "calc-op": '"+" | "-" | "*" | "/" | "^" | "of"',
    "calc-fn": '"sqrt" | "abs" | "round" | "floor" | "ceil" | "exp" | "ln" | "log" | "sin" | "cos" | "tan" '
               '| "min" | "max"',
}


class State:
    """The plugin's context, its saved choices and its MCP servers."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        self.mcp: Any = None
        self._lock = threading.RLock()
        self._config: dict[str, Any] | None = None
        #: Called (from any thread) when tools, policies or servers change; the panel listens.
        self.listeners: list[Any] = []
        #: The tools each conversation offers; its ``selection`` is the panel's pick.
        self.choice: ConversationChoice | None = None

    def start(self, context: PluginContext) -> None:
        """Take a fresh context (nothing from an earlier one carries over)."""
        self.close()
        self.__init__()
        self.context = context
        self.choice = context.choice("tools", fields=("tools",))

    # -- files ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The plugin's data folder."""
        return self.context.data_dir

    @property
    def selection(self) -> list[str]:
        """The panel's pick, for a conversation that has none yet (e.g. a new chat)."""
        return list(self.choice.selection.get("tools") or []) if self.choice else []

    @property
    def config_file(self) -> Path:
        """Where policies and granted folders are kept."""
        return self.data_dir / "tools.json"

    @property
    def mcp_file(self) -> Path:
        """The MCP servers' configuration."""
        return self.data_dir / "mcp.json"

    def _load(self) -> dict[str, Any]:
        if self._config is None and self.context is None:
            return {"policies": {}, "granted_folders": []}  # not started: defaults, nothing saved
        if self._config is None:
            config: dict[str, Any] = {}
            try:
                config = json.loads(self.config_file.read_text(encoding="utf-8"))
                if not isinstance(config, dict):
                    raise ValueError("not an object")
            except FileNotFoundError:
                config = {}
            except (OSError, ValueError) as exc:
                # A damaged file must not lose the user's tools: keep it aside (named like
                # the app's other damaged files), start afresh.
                try:
                    backup = move_aside(self.config_file)
                    log.warning("tools.json could not be read (%s); kept as %s", exc, backup.name)
                except OSError:
                    log.warning("tools.json could not be read (%s) nor moved aside", exc)
                config = {}
            config.setdefault("policies", {})
            config.setdefault("granted_folders", [])
            self._config = config
        return self._config

    def _save(self) -> None:
        atomic_write_text(self.config_file, json.dumps(self._load(), indent=2, ensure_ascii=False))
        self.changed()

    def changed(self) -> None:
        """Tell the listeners that something they show has changed."""
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("a tools listener failed")

    # -- granted folders ----------------------------------------------------------------------
    def granted_folders(self) -> list[Path]:
        """The folders the file tools may read."""
        with self._lock:
            return [Path(p) for p in self._load()["granted_folders"]]

    def grant(self, folder: str | Path) -> Path:
        """Let the file tools read ``folder`` (and everything under it)."""
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder.")
        with self._lock:
            folders = self._load()["granted_folders"]
            if str(path) not in folders:
                folders.append(str(path))
                self._save()
        return path

    def revoke(self, folder: str | Path) -> None:
        """Take a folder back from the file tools."""
        with self._lock:
            folders = self._load()["granted_folders"]
            wanted = {str(folder), str(Path(folder).expanduser().resolve())}
            kept = [f for f in folders if f not in wanted]
            if len(kept) == len(folders):
                raise ValueError(f"{folder} is not a granted folder.")
            self._load()["granted_folders"] = kept
            self._save()

    # -- tools and policies -------------------------------------------------------------------
    def registered(self) -> dict[str, Tool]:
        """Tools every enabled plugin registers (this one's built-ins included), checked."""
        return self.context.tools()

    def all_tools(self) -> dict[str, Tool]:
        """Registered tools and those of MCP servers, by name."""
        tools = dict(self.registered())
        if self.mcp is not None:
            for tool in self.mcp.tools():
                try:
                    check_tool(tool)  # a server's schema is checked like a plugin's
                except ToolError as exc:
                    log.warning("MCP tool left out: %s", exc)
                    continue
                tools.setdefault(tool.name, tool)
        return tools

    def policy(self, tool: Tool | str) -> str:
        """"ask", "allow" or "deny" for ``tool``: the user's choice, else the tool's default."""
        name = tool if isinstance(tool, str) else tool.name
        with self._lock:
            chosen = self._load()["policies"].get(name)
        if chosen in POLICIES:
            return chosen
        found = tool if isinstance(tool, Tool) else self.all_tools().get(name)
        return "ask" if found is None or found.requires_approval else "allow"

    def set_policy(self, name: str, policy: str) -> None:
        """Choose how calls to the tool ``name`` are approved."""
        if policy not in POLICIES:
            raise ValueError(f"Unknown policy {policy!r}; use one of {', '.join(POLICIES)}.")
        with self._lock:
            self._load()["policies"][name] = policy
            self._save()

    # -- per conversation ---------------------------------------------------------------------
    def offered(self, conversation_id: int | None) -> tuple[list[str], bool]:
        """(the tools a conversation offers, whether it remembered them); none until the user
        picks some (the panel's current choice counts for a conversation without one)."""
        choice, remembered = self.choice.current(conversation_id)
        return [n for n in choice.get("tools") or [] if isinstance(n, str)], remembered

    def set_offered(self, conversation_id: int | None, names: list[str]) -> None:
        """Remember which tools a conversation offers (the panel's choice when it has no id yet)."""
        self.choice.remember(conversation_id, {"tools": list(dict.fromkeys(names))})
        self.changed()

    # -- MCP ----------------------------------------------------------------------------------
    def mcp_manager(self) -> Any:
        """The MCP servers' manager (made on first use; nothing starts until :meth:`start_mcp`)."""
        from desktop_app_tools.mcp_client import McpManager

        with self._lock:
            if self.mcp is None:
                self.mcp = McpManager(self.mcp_file, self.context.log_dir, on_change=self.changed)
            return self.mcp

    def start_mcp(self) -> None:
        """Start the MCP servers of mcp.json in the background (returns at once)."""
        self.mcp_manager().start()

    def close(self) -> None:
        """Stop the MCP servers."""
        with self._lock:
            mcp, self.mcp = self.mcp, None
        if mcp is not None:
            try:
                mcp.stop()
            except Exception:
                log.exception("stopping MCP servers failed")


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context and start the configured MCP servers in the background."""
    state.start(context)
    if state.mcp_file.exists():
        try:
            state.start_mcp()
        except Exception:
            log.exception("the MCP servers could not be started")


@hookimpl
def app_closing(context: Any) -> None:
    """Stop MCP servers so no child process outlives the app."""
    state.close()


@hookimpl
def register_settings(register) -> None:
    """This plugin's settings."""
    register([
        Option("tool_choice", str, "auto", "auto: the model decides whether to call a tool; required: its "
               "first reply is always a tool call (helps very small models).", choices=("auto", "required")),
        Option("max_rounds", int, 4, "At most this many rounds of tool calls per answer.", minimum=1, maximum=10),
    ])


@hookimpl
def register_tools(register) -> None:
    """The built-in tools: calculator, time, unit conversion, and the granted folders' files."""
    from desktop_app_tools import builtin

    # Small models read every word of a description: the calculator's short one works best.
    short = {"calculator": 'Evaluate an arithmetic expression exactly, e.g. "17.5% of 2,340" or '
                           '"sqrt(2) * (3 + 4)^2". Use it for any arithmetic.'}
    for function in builtin.PURE_TOOLS:
        tool = tool_from_function(function, description=short.get(function.__name__),
                                  requires_approval=False, timeout=10.0)
        if function is builtin.calculator:
            # Only characters of arithmetic: the call grammar then keeps a small model from
            # writing prose (or closing braces) into the expression.
            tool.parameters["properties"]["expression"].update(
                {"pattern": EXPRESSION_PATTERN, "maxLength": 300, "x-gbnf": "calc-expr",
                 "x-gbnf-rules": EXPRESSION_GRAMMAR})
        register(tool)
    # Pages of a file or folder fit in one tool result, so "more from line N" stays true.
    files = builtin.FileAccess(state.granted_folders, max_chars=MAX_RESULT_CHARS - 400, max_entries=100)
    register(tool_from_function(files.list_folder, requires_approval=True, timeout=20.0))
    register(tool_from_function(files.read_file, requires_approval=True, timeout=20.0))


@hookimpl
def prepare_turn(turn: Turn) -> None:
    """Offer the conversation's tools to the model."""
    chosen = turn.plugin_options.get(PLUGIN) or {}
    if chosen.get("tools") is not None:
        names = [n for n in chosen["tools"] if n != "none"]
        state.set_offered(turn.conversation_id, names)
    else:
        names, remembered = state.offered(turn.conversation_id)
        if names and not remembered:
            # A new conversation keeps the tools it started with.
            state.set_offered(turn.conversation_id, names)
    if not names:
        return
    available = state.all_tools()
    if state.mcp is not None and any(n not in available and "." in n for n in names):
        # An MCP server still starting (or restarting): give it a moment to list its tools.
        for server in {n.split(".", 1)[0] for n in names if n not in available and "." in n}:
            state.mcp.wait_ready(server, 15.0)
        available = state.all_tools()
    missing = [n for n in names if n not in available]
    for name in names:
        if name in available and state.policy(available[name]) != "deny":
            turn.add_tool(available[name])
    if missing:
        turn.add_note(f"Tools not available now: {', '.join(missing)}.")
    if turn.tools:
        settings = state.context.settings
        turn.set_option("tool_choice", chosen.get("tool_choice") or settings.get("tool_choice"))
        turn.set_option("max_tool_rounds", int(settings.get("max_rounds")))


@hookimpl
def approve_tool_call(call: dict[str, Any]) -> bool | str:
    """Apply the tool's policy: allow or deny at once, or "ask" the user."""
    policy = state.policy(call["tool"])
    return "ask" if policy == "ask" else policy == "allow"


@hookimpl
def remember_tool_policy(tool: str, policy: str) -> None:
    """Keep the user's "always" answer from the approval dialog."""
    state.set_policy(tool, policy)


@hookimpl
def register_commands(subparsers) -> None:
    """`parley tools ...`, `parley mcp ...` and `parley chat --tools ...`."""
    from desktop_app_tools import cli

    cli.register(subparsers)


@hookimpl
def register_panels(register) -> None:
    """The Tools side panel."""

    def make(context, parent):
        from desktop_app_tools.ui import ToolsPanel

        return ToolsPanel(context, parent)

    register("Tools", make, area="right")
