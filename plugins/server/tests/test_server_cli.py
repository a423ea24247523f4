"""`parley serve` as a user runs it: a process that prints its address, serves, and stops on Ctrl+C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model

PARLEY = Path(sys.executable).with_name("parley")


def start_serving(*args: str) -> tuple[subprocess.Popen, str, list[str]]:
    process = subprocess.Popen([str(PARLEY), "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            return process, found.group(0), lines
    process.wait(30)
    raise AssertionError(f"parley serve did not start: {''.join(lines)}{process.stderr.read()}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "--noproxy", "*", *args], capture_output=True, text=True,
                          timeout=300, check=True).stdout


def test_parley_serve_serves_until_ctrl_c():
    process, url, _ = start_serving()
    try:
        models = json.loads(curl(url + "/v1/models"))
        assert models["object"] == "list" and models["data"]
        body = json.dumps({"model": models["data"][0]["id"], "max_tokens": 3,
                           "messages": [{"role": "user", "content": "hi"}]})
        reply = json.loads(curl("-H", "Content-Type: application/json", "-d", body, url + "/v1/chat/completions"))
        assert reply["object"] == "chat.completion"
    finally:
        code = stop(process)
    assert code == 0


def test_rotate_key_shows_a_key_once_and_the_server_requires_it(paths):
    paths.settings_file.write_text('[plugins.server]\napi_key_required = true\n', encoding="utf-8")
    process, url, lines = start_serving("--rotate-key")
    try:
        key = next(m.group(0) for line in lines for m in [re.search(r"sk-parley-\S+", line)] if m)
        denied = curl("-o", "/dev/null", "-w", "%{http_code}", url + "/v1/models")
        assert denied == "401"
        allowed = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {key}", url + "/v1/models")
        assert allowed == "200"
    finally:
        assert stop(process) == 0
    assert key not in "".join(p.read_text(errors="replace") for p in paths.data_dir.rglob("*.json"))
