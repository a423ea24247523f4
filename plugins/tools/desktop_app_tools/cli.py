"""`parley tools list|policy|grant|revoke|folders|call`, `parley mcp list|log|restart`, and
`parley chat --tools NAME,... [--tool-choice required]`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


class _ToolsOption(argparse.Action):
    """Collects --tools into ``args.plugin_options["tools"]["tools"]``."""

    def __call__(self, parser, namespace, value, option_string=None):
        options = getattr(namespace, "plugin_options", None) or {}
        names = options.setdefault("tools", {}).setdefault("tools", [])
        names.extend(n.strip() for n in value.split(",") if n.strip())
        namespace.plugin_options = options


class _ChoiceOption(argparse.Action):
    """Collects --tool-choice into ``args.plugin_options["tools"]["tool_choice"]``."""

    def __call__(self, parser, namespace, value, option_string=None):
        options = getattr(namespace, "plugin_options", None) or {}
        options.setdefault("tools", {})["tool_choice"] = value
        namespace.plugin_options = options


def register(subparsers) -> None:
    """Add the commands."""
    chat = subparsers.choices.get("chat")
    if chat is not None:
        chat.add_argument("--tools", action=_ToolsOption, metavar="NAME[,NAME]",
                          help="offer these tools to the model (see `parley tools list`); remembered "
                               "for the conversation; --tools none switches them off")
        chat.add_argument("--tool-choice", action=_ChoiceOption, choices=("auto", "required"),
                          help="required: the model's first reply is a tool call")
    tools = subparsers.add_parser("tools", help="tools the model may call").add_subparsers(
        title="actions", metavar="ACTION", required=True)
    p = tools.add_parser("list", help="list tools with their source and approval policy")
    p.set_defaults(handler=_list)
    p = tools.add_parser("policy", help="choose whether a tool's calls are asked about, allowed or denied")
    p.add_argument("name")
    p.add_argument("policy", choices=("ask", "allow", "deny"))
    p.set_defaults(handler=_policy)
    p = tools.add_parser("grant", help="let the file tools read a folder")
    p.add_argument("folder")
    p.set_defaults(handler=_grant)
    p = tools.add_parser("revoke", help="take a folder back from the file tools")
    p.add_argument("folder")
    p.set_defaults(handler=_revoke)
    p = tools.add_parser("folders", help="list the granted folders")
    p.set_defaults(handler=_folders)
    p = tools.add_parser("call", help="run a tool yourself, e.g. parley tools call calculator "
                                      "'{\"expression\": \"2+2\"}'")
    p.add_argument("name")
    p.add_argument("arguments", nargs="?", default="{}", help="the arguments as a JSON object")
    p.set_defaults(handler=_call)

    mcp = subparsers.add_parser("mcp", help="Model Context Protocol servers (configured in mcp.json)")
    actions = mcp.add_subparsers(title="actions", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="start the servers and show their status and tools")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for each server")
    p.set_defaults(handler=_mcp_list)
    p = actions.add_parser("log", help="show a server's log")
    p.add_argument("name")
    p.set_defaults(handler=_mcp_log)


def _state(context: Any):
    from desktop_app_tools import state

    if state.context is not context:
        state.start(context)
    return state


def _list(args: argparse.Namespace, context: Any) -> int:
    state = _state(context)
    _start_mcp(state, wait=10.0)
    tools = state.all_tools()
    if not tools:
        print("No tools.")
        return 0
    width = max(len(n) for n in tools)
    for name, tool in sorted(tools.items(), key=lambda kv: (kv[1].source, kv[0])):
        print(f"{name:<{width}}  {state.policy(tool):<5}  {tool.source:<18}  {tool.description}")
    return 0


def _policy(args: argparse.Namespace, context: Any) -> int:
    state = _state(context)
    state.set_policy(args.name, args.policy)
    known = args.name in state.registered() or "." in args.name
    print(f"{args.name}: {args.policy}" + ("" if known else " (no such tool yet; kept for when it appears)"))
    return 0


def _grant(args: argparse.Namespace, context: Any) -> int:
    print(f"Granted {_state(context).grant(args.folder)}")
    return 0


def _revoke(args: argparse.Namespace, context: Any) -> int:
    _state(context).revoke(args.folder)
    print(f"Revoked {args.folder}")
    return 0


def _folders(args: argparse.Namespace, context: Any) -> int:
    folders = _state(context).granted_folders()
    print("\n".join(str(f) for f in folders) if folders else "No folder is granted.")
    return 0


def _call(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.api import run_tool, validate_arguments

    state = _state(context)
    if "." in args.name:
        _start_mcp(state, wait=20.0)
    tool = state.all_tools().get(args.name)
    if tool is None:
        raise ValueError(f"There is no tool named {args.name!r}; see `parley tools list`.")
    try:
        arguments = json.loads(args.arguments)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The arguments are not valid JSON: {exc.msg}.") from exc
    result, error, ms = run_tool(tool, validate_arguments(tool, arguments))
    if error:
        print(f"parley: {args.name}: {error}", file=sys.stderr)
        return 1
    print(result)
    print(f"({ms:.1f} ms)", file=sys.stderr)
    return 0


def _start_mcp(state: Any, wait: float) -> None:
    if not state.mcp_file.exists():
        return
    if state.mcp is None:
        state.start_mcp()
    for server in state.mcp.servers():
        if server.state in ("starting", "stopped"):
            state.mcp.wait_ready(server.name, wait)


def _mcp_list(args: argparse.Namespace, context: Any) -> int:
    state = _state(context)
    if not state.mcp_file.exists():
        print(f"No MCP servers: create {state.mcp_file} with an \"mcpServers\" object.")
        return 0
    _start_mcp(state, args.wait)
    for problem in state.mcp.config_errors():
        print(f"mcp.json: {problem}", file=sys.stderr)
    for server in state.mcp.servers():
        print(f"{server.name}  [{server.transport}]  {server.state}: {server.message}")
        for tool in state.mcp.tools():
            if tool.source == f"mcp:{server.name}":
                print(f"    {tool.name}  {tool.description}")
    return 0


def _mcp_log(args: argparse.Namespace, context: Any) -> int:
    print(_state(context).mcp_manager().log_tail(args.name))
    return 0
