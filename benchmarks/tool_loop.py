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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from desktop_app.core.tool_loop import ToolLoop
from desktop_app.core.tool_protocol import PromptProtocol
from desktop_app.core.turn import GenerationOptions, Turn

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
        (call,) = protocol.parse_calls(reply)
        outcome = loop.run_call(call, {tool.name: tool})
        loop._record(turn, outcome)
        turn.tool_exchange.extend(protocol.exchange([outcome]))
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
    with tempfile.TemporaryDirectory() as home:
        # A throwaway Parley home: the benchmark never touches the user's settings.
        os.environ["PARLEY_HOME"] = home
        from desktop_app.context import build_context
        from desktop_app_tools import builtin, state

        server = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
        context = build_context()
        (context.paths.data_dir / "mcp.json").write_text(json.dumps({"mcpServers": {"time": server}}))
        try:
            tools = state.all_tools()
            reply = json.dumps({"tool": "calculator", "arguments": {"expression": "17.5% of 2,340"}})
            raw = measure(lambda: builtin.calculator("17.5% of 2,340"), REPEATS)
            parley = measure(round_of(tools["calculator"], reply, context.plugins), REPEATS)
            report("built-in calculator", parley, raw, 5.0)

            state.start_mcp()
            status = state.mcp.wait_ready("time", 30)
            if status.state != "ready":
                raise SystemExit(f"the time server did not start: {status.message}")
            # The user's wait for an approval is not Parley's overhead: allow it for the run.
            state.set_policy("time.get_current_time", "allow")
            tool = state.all_tools()["time.get_current_time"]
            reply = json.dumps({"tool": tool.name, "arguments": {"timezone": "Asia/Tokyo"}})
            parley = measure(round_of(tool, reply, context.plugins), MCP_REPEATS)
        finally:
            context.close()
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
