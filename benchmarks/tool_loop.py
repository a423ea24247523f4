"""What one round of tool calling costs, model time excluded.

A round is everything between the model's reply and the next model call: reading the call
from the reply, checking its arguments, the approval hooks, running the tool (with its
timeout guard), the trace entry and events, and building the next prompt's grammar and
messages. Measured for the built-in calculator and for an MCP tool over stdio (the reference
``mcp-server-time`` server), each next to the raw call of the same tool in the same run.

Goals: under 5 ms for a built-in tool, under 50 ms for an MCP tool over stdio.

Run: ``.venv/bin/python benchmarks/tool_loop.py``
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from desktop_app.core.tool_loop import ToolLoop
from desktop_app.core.tool_protocol import PromptProtocol
from desktop_app.core.turn import GenerationOptions, Turn
from desktop_app.plugins import PluginHost

REPEATS = 200
MCP_REPEATS = 50


def measure(fn, repeats: int) -> list[float]:
    """Milliseconds per call, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def round_of(tool, reply: str, host: PluginHost):
    """One round as the loop runs it, minus the model: parse, check, approve, run, trace, next prompt."""
    protocol = PromptProtocol([tool])
    loop = ToolLoop(lambda *a: None, None, host.hook, approver=None, on_event=lambda e: None)
    turn = Turn(1, "q", tools=[tool])

    def one() -> None:
        call = protocol.parse(reply)
        outcome = loop.run_call(call, {tool.name: tool})
        loop._record(turn, outcome)
        turn.tool_exchange.extend(protocol.exchange(call, outcome))
        protocol.grammar(required=False)
        if not outcome.ok:
            raise SystemExit(f"the tool failed: {outcome.error}")
        turn.trace.clear()
        turn.tool_exchange.clear()

    return one


def report(name: str, parley: list[float], raw: list[float], goal_ms: float) -> None:
    p50, raw50 = statistics.median(parley), statistics.median(raw)
    p95 = sorted(parley)[int(len(parley) * 0.95) - 1]
    overhead = p50 - raw50
    print(f"{name}")
    print(f"  raw call of the tool            {raw50:8.3f} ms (median)")
    print(f"  Parley round with that call     {p50:8.3f} ms (median), p95 {p95:.3f} ms")
    print(f"  overhead of the round           {overhead:8.3f} ms   (goal < {goal_ms:g} ms: "
          f"{'met' if p50 < goal_ms else 'NOT met'} for the whole round)")
    print(f"  ratio round / raw call          {p50 / raw50:8.2f}x")


def main() -> None:
    from desktop_app_tools import builtin, register_tools

    host = PluginHost(default_plugins=("desktop_app_tools",)).load_all()
    tools = {}
    register_tools(lambda t: tools.__setitem__(t.name, t))
    calculator = tools["calculator"]
    reply = json.dumps({"tool": "calculator", "arguments": {"expression": "17.5% of 2,340"}})
    raw = measure(lambda: builtin.calculator("17.5% of 2,340"), REPEATS)
    parley = measure(round_of(calculator, reply, host), REPEATS)
    report("built-in calculator", parley, raw, 5.0)

    from desktop_app_tools.mcp_client import McpManager

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "mcp.json"
        server = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
        config.write_text(json.dumps({"mcpServers": {"time": server}}))
        manager = McpManager(config, Path(folder))
        manager.start()
        try:
            status = manager.wait_ready("time", 30)
            if status.state != "ready":
                raise SystemExit(f"the time server did not start: {status.message}")
            tool = next(t for t in manager.tools() if t.name == "time.get_current_time")
            reply = json.dumps({"tool": tool.name, "arguments": {"timezone": "Asia/Tokyo"}})
            parley = measure(round_of(tool, reply, host), MCP_REPEATS)
        finally:
            manager.stop()
        raw = asyncio.run(_raw_mcp_calls(server))
    report("MCP tool over stdio (mcp-server-time, get_current_time)", parley, raw, 50.0)


async def _raw_mcp_calls(server: dict) -> list[float]:
    """The same call through the MCP SDK's client alone: the baseline for the MCP round."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=server["command"], args=server["args"])
    times = []
    async with Client(params) as client:
        for i in range(MCP_REPEATS + 2):
            started = time.perf_counter()
            await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            if i >= 2:
                times.append((time.perf_counter() - started) * 1000)
    return times


if __name__ == "__main__":
    main()
