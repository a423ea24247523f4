"""The MCP client manager, against real server processes: no part of the SDK is mocked.

The stdio server is the reference ``mcp-server-time``; the HTTP one is ``mcp_http_server.py``
next to this file, built with the SDK's own ``MCPServer``. Broken servers are one-line Python
programs that exit, hang, or ignore being asked to stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from desktop_app.api import ParleyError, Tool
from desktop_app_tools.mcp_client import McpError, McpManager, ServerStatus, sanitize_name

pytestmark = pytest.mark.timeout(600)

#: How long a test waits for a server to start. Generous on purpose: a cold start of a Python
#: MCP server takes seconds on a slow machine, and a wait that is long enough costs nothing.
START = 120

HERE = Path(__file__).resolve().parent
TIME_SERVER = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def python_server(code: str) -> dict:
    """A config entry running a one-line Python program as the "server"."""
    return {"command": sys.executable, "args": ["-c", code]}


def write_config(path: Path, servers: dict) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def live_children() -> set[int]:
    """Live child processes of this test process."""
    try:
        import psutil

        return {p.pid for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE}
    except ImportError:
        me, found = os.getpid(), set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == me and fields[0] != "Z":
                    found.add(int(entry))
        return found


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def make_manager(tmp_path):
    """Managers over a config in ``tmp_path``, always stopped at the end of the test."""
    managers: list[McpManager] = []

    def make(servers: dict | None, **kwargs) -> McpManager:
        config = tmp_path / "mcp.json"
        if servers is not None:
            write_config(config, servers)
        manager = McpManager(config, tmp_path / "logs", **kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.stop()


@pytest.fixture(scope="module")
def time_manager(tmp_path_factory):
    """One running time server shared by the tests that only call it."""
    folder = tmp_path_factory.mktemp("mcp-time")
    changes: list[float] = []
    manager = McpManager(write_config(folder / "mcp.json", {"time": TIME_SERVER}), folder / "logs",
                         on_change=lambda: changes.append(time.monotonic()))
    manager.start()
    status = manager.wait_ready("time", START)
    assert status.state == "ready", status
    manager.changes = changes
    yield manager
    manager.stop()


# --- the reference stdio server ---------------------------------------------------------------


def test_the_time_servers_tools_are_listed_with_their_schemas(time_manager):
    status = time_manager.servers()
    assert [(s.name, s.transport, s.state, s.message, s.tools) for s in status] == [
        ("time", "stdio", "ready", "2 tools", 2)]
    assert isinstance(status[0], ServerStatus) and status[0].pid and alive(status[0].pid)
    tools = {tool.name: tool for tool in time_manager.tools()}
    assert set(tools) == {"time.get_current_time", "time.convert_time"}
    current = tools["time.get_current_time"]
    assert isinstance(current, Tool)
    assert current.requires_approval and current.source == "mcp:time"
    assert "time" in current.description.lower()
    assert current.parameters["type"] == "object" and current.parameters["required"] == ["timezone"]
    assert time_manager.changes, "on_change was never called"


def test_a_call_returns_the_servers_answer(time_manager):
    answer = json.loads(time_manager.call("time", "get_current_time", {"timezone": "Asia/Tokyo"}))
    assert answer["timezone"] == "Asia/Tokyo"
    stamp = datetime.fromisoformat(answer["datetime"])
    assert stamp.utcoffset() == timedelta(hours=9)
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_a_tool_function_calls_the_server(time_manager):
    tool = next(t for t in time_manager.tools() if t.name == "time.convert_time")
    answer = json.loads(tool.function(source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo"))
    assert answer["target"]["datetime"].endswith("21:00:00+09:00")


def test_a_call_the_server_rejects_raises_its_message(time_manager):
    with pytest.raises(McpError, match="Mars/Olympus") as caught:
        time_manager.call("time", "get_current_time", {"timezone": "Mars/Olympus"})
    assert isinstance(caught.value, ParleyError) and "time.get_current_time" in str(caught.value)
    with pytest.raises(McpError, match="Unknown tool"):
        time_manager.call("time", "no_such_tool", {})
    with pytest.raises(McpError, match="no MCP server called 'nowhere'"):
        time_manager.call("nowhere", "get_current_time", {})
    gone = time_manager.wait_ready("nowhere", 1)
    assert gone.state == "stopped" and "no MCP server called 'nowhere'" in gone.message
    assert time_manager.status("time").state == "ready"  # rejected calls do not hurt the server


def test_calls_from_many_threads_at_once(time_manager):
    zones = ["Asia/Tokyo", "Europe/Paris", "America/New_York", "UTC"] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda zone: json.loads(time_manager.call("time", "get_current_time", {"timezone": zone})),
            zones))
    assert [a["timezone"] for a in answers] == zones


def test_many_calls_in_a_row_all_answer(time_manager):
    # The round trip's speed is measured by benchmarks/tool_loop.py; here, that none is lost.
    answers = [json.loads(time_manager.call("time", "get_current_time", {"timezone": "UTC"})) for _ in range(50)]
    assert {a["timezone"] for a in answers} == {"UTC"}


def test_result_text_prefers_text_then_structured_content():
    from mcp.types import CallToolResult, TextContent

    from desktop_app_tools.mcp_client import _result_text

    both = CallToolResult(content=[TextContent(type="text", text="a"), TextContent(type="text", text="b")],
                          structured_content={"x": 1})
    assert _result_text(both) == "a\nb"
    structured = CallToolResult(content=[], structured_content={"temperature": 21.5, "unit": "°C"})
    assert json.loads(_result_text(structured)) == {"temperature": 21.5, "unit": "°C"}


def test_importing_the_module_loads_neither_the_sdk_nor_qt():
    code = ("import sys, desktop_app_tools.mcp_client; "
            "print(sorted(m for m in ('mcp', 'anyio', 'PySide6') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# --- servers that fail ------------------------------------------------------------------------------


def test_a_bad_startup_timeout_is_reported(make_manager):
    manager = make_manager({"slow": {**python_server("pass"), "startup_timeout": "soon"}})
    manager.start()
    status = manager.wait_ready("slow", START)
    assert status.state == "failed" and '"startup_timeout" must be a number of seconds' in status.message


def test_broken_servers_are_reported_without_hurting_the_others(make_manager):
    manager = make_manager({
        "time": TIME_SERVER,
        "missing": {"command": "no-such-mcp-server-command"},
        "quits": python_server("import sys; print('bad API key', file=sys.stderr); sys.exit(3)"),
        # Reads its stdin forever and never answers: only its start timeout ends it.
        "hangs": {**python_server("import sys; sys.stdin.read()"), "startup_timeout": 1.5},
    })
    manager.start()
    # start() does not wait for the servers: they are still starting when it returns.
    assert manager.status("hangs").state == "starting"
    missing = manager.wait_ready("missing", START)
    assert missing.state == "failed" and "'no-such-mcp-server-command' not found" in missing.message
    quits = manager.wait_ready("quits", START)
    assert quits.state == "failed" and quits.message == "exited with code 3: bad API key"
    hangs = manager.wait_ready("hangs", START)
    assert hangs.state == "failed" and "did not start within 1.5 s" in hangs.message
    assert manager.wait_ready("time", START).state == "ready"
    assert {t.source for t in manager.tools()} == {"mcp:time"}
    # A call to a server that cannot start tries again, then says why it failed.
    with pytest.raises(McpError, match="could not be started: exited with code 3: bad API key"):
        manager.call("quits", "anything", {}, timeout=10)
    log = manager.log_tail("quits")
    assert "bad API key" in log and "[parley] failed to start: exited with code 3" in log
    assert "restarted on demand" in log
    # The log can be read without a running manager too (the command line does that).
    assert "bad API key" in McpManager(manager.config_path, manager.log_dir).log_tail("quits")


def test_a_killed_server_is_crashed_then_restarted_on_demand(make_manager):
    crashed = threading.Event()
    manager = make_manager({"time": TIME_SERVER},
                           on_change=lambda: crashed.set() if manager.status("time").state == "crashed" else None)
    manager.start()
    first = manager.wait_ready("time", START)
    assert first.state == "ready" and first.pid
    os.kill(first.pid, signal.SIGKILL)
    assert crashed.wait(10), manager.servers()
    status = manager.status("time")
    assert status.state == "crashed" and "SIGKILL" in status.message and status.pid is None
    assert len(manager.tools()) == 2, "tools stay offered while their server is down"
    answer = json.loads(manager.call("time", "get_current_time", {"timezone": "Europe/Paris"}))
    assert answer["timezone"] == "Europe/Paris"
    again = manager.status("time")
    assert again.state == "ready" and again.pid not in (None, first.pid)
    log = manager.log_tail("time")
    assert "crashed: killed by signal SIGKILL" in log and "restarted on demand" in log


def test_restart_replaces_the_process(make_manager):
    manager = make_manager({"time": TIME_SERVER})
    manager.start()
    first = manager.wait_ready("time", START)
    manager.restart("time")
    assert manager.status("time").state == "starting"
    second = manager.wait_ready("time", START)
    assert second.state == "ready" and second.pid != first.pid
    assert wait_for(lambda: not alive(first.pid), 5)


def test_on_change_cannot_deadlock_or_break_the_manager(make_manager):
    seen: list[str] = []

    def on_change():
        try:
            manager.call("time", "get_current_time", {"timezone": "UTC"})
        except McpError as exc:
            seen.append(str(exc))
        raise RuntimeError("a faulty listener")

    manager = make_manager({"time": TIME_SERVER}, on_change=on_change)
    manager.start()
    assert manager.wait_ready("time", START).state == "ready"
    assert wait_for(lambda: seen)
    assert "cannot be called from the MCP thread" in seen[0]
    assert manager.call("time", "get_current_time", {"timezone": "UTC"})


# --- configuration --------------------------------------------------------------------------------


def test_an_invalid_config_is_reported_not_raised(make_manager, tmp_path):
    (tmp_path / "mcp.json").write_text('{"mcpServers": {"time": ', encoding="utf-8")
    manager = make_manager(None)
    manager.start()
    assert manager.servers() == [] and manager.tools() == []
    assert "not valid JSON" in manager.config_errors()[0]


def test_bad_entries_fail_with_their_problem_and_names_are_cleaned(make_manager):
    manager = make_manager({
        "no command": {"args": ["x"]},
        "bad-url": {"type": "http", "url": "ftp://example.org"},
        "odd": {"type": "carrier-pigeon", "command": "x"},
        "off": {**TIME_SERVER, "disabled": True},
    })
    manager.start()
    status = {s.name: s for s in manager.servers()}
    assert set(status) == {"no_command", "bad-url", "odd", "off"}
    assert status["no_command"].state == "failed" and '"command" is missing' in status["no_command"].message
    assert status["bad-url"].state == "failed" and "http://" in status["bad-url"].message
    assert status["odd"].state == "failed" and "carrier-pigeon" in status["odd"].message
    assert status["off"].state == "disabled"
    errors = "\n".join(manager.config_errors())
    assert "'no command' is called 'no_command'" in errors and "carrier-pigeon" in errors
    with pytest.raises(McpError, match="disabled"):
        manager.call("off", "get_current_time", {"timezone": "UTC"})
    assert sanitize_name("my server!") == "my_server" and sanitize_name("???") == "server"


def test_a_missing_config_means_no_servers(make_manager):
    manager = make_manager(None)
    manager.start()
    assert manager.servers() == [] and manager.config_errors() == []


def test_reload_adds_removes_and_restarts_changed_servers(make_manager, tmp_path):
    manager = make_manager({"time": TIME_SERVER, "keep": TIME_SERVER})
    manager.start()
    old_time = manager.wait_ready("time", START)
    kept = manager.wait_ready("keep", START)
    assert old_time.state == kept.state == "ready"

    write_config(tmp_path / "mcp.json", {
        "keep": TIME_SERVER,
        "tokyo": {**TIME_SERVER, "args": ["-m", "mcp_server_time", "--local-timezone", "Asia/Tokyo"]},
    })
    manager.reload()
    assert [s.name for s in manager.servers()] == ["keep", "tokyo"]
    assert manager.wait_ready("tokyo", START).state == "ready"
    assert manager.status("keep").pid == kept.pid, "an unchanged server keeps running"
    assert wait_for(lambda: not alive(old_time.pid), 10), "a removed server is stopped"
    assert {t.name.split(".")[0] for t in manager.tools()} == {"keep", "tokyo"}

    # A changed entry is restarted; a broken file leaves the running servers alone.
    write_config(tmp_path / "mcp.json", {"keep": {**TIME_SERVER, "env": {"TZ": "UTC"}}})
    manager.reload()
    assert manager.wait_ready("keep", START).pid != kept.pid
    (tmp_path / "mcp.json").write_text("{oops", encoding="utf-8")
    manager.reload()
    assert manager.config_errors() and [s.state for s in manager.servers()] == ["ready"]


# --- stopping -----------------------------------------------------------------------------------------


def test_stop_leaves_no_child_process(make_manager):
    before = live_children()
    manager = make_manager({
        "time": TIME_SERVER,
        # Still starting when stop() comes, and deaf to both stdin closing and SIGTERM.
        "stubborn": python_server("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "time.sleep(3600)"),
    }, connect_timeout=3 * START)
    manager.start()
    assert manager.wait_ready("time", START).state == "ready"
    assert wait_for(lambda: manager.status("stubborn").pid)
    pids = [s.pid for s in manager.servers()]
    assert all(alive(pid) for pid in pids)
    manager.stop()
    assert not any(alive(pid) for pid in pids)
    assert live_children() - before == set()
    assert [s.state for s in manager.servers()] == ["stopped", "stopped"]
    with pytest.raises(McpError, match="not running"):
        manager.call("time", "get_current_time", {"timezone": "UTC"})
    # A stopped manager can start again (with the stubborn server gone from the config).
    write_config(manager.config_path, {"time": TIME_SERVER})
    manager.start()
    assert manager.wait_ready("time", START).state == "ready"


# --- streamable HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def http_server():
    """The SDK-based test server on a free port; yields its URL."""
    process = subprocess.Popen([sys.executable, str(HERE / "mcp_http_server.py"), "--token", "s3cret"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        yield process, f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        process.kill()
        process.wait(10)


def test_a_streamable_http_server(make_manager, http_server):
    process, url = http_server
    manager = make_manager({
        "web": {"type": "streamable-http", "url": url, "headers": {"Authorization": "Bearer s3cret"}},
        "no-token": {"url": url},
    })
    manager.start()
    web = manager.wait_ready("web", START)
    assert (web.state, web.transport, web.tools) == ("ready", "http", 2)
    refused = manager.wait_ready("no-token", START)
    assert refused.state == "failed" and "HTTP 401" in refused.message
    tools = {t.name: t for t in manager.tools()}
    assert set(tools) == {"web.add", "web.echo"}
    assert tools["web.add"].parameters["required"] == ["a", "b"]
    assert tools["web.add"].function(a=2, b=3) == "5"
    assert manager.call("web", "echo", {"text": "hello"}) == "hello"
    with pytest.raises(McpError, match="asked to fail: oops"):
        manager.call("web", "echo", {"text": "oops", "fail": True})
    # The server goes away: the call says so, and the status follows.
    process.kill()
    process.wait(10)
    with pytest.raises(McpError):
        manager.call("web", "add", {"a": 1, "b": 1}, timeout=10)
    assert manager.status("web").state in ("crashed", "failed")
    assert "web" in [t.name.split(".")[0] for t in manager.tools()]
