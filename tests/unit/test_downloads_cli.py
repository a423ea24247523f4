"""`parley models download REPO FILE` against the hub mirror on loopback (HF_ENDPOINT pointed at it)."""

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from desktop_app.cli import _DownloadProgress, main
from desktop_app.core.downloads import DownloadState, DownloadStatus, download_id_for
from desktop_app.core.models import default_model_path
from tests.hub_download_repos import (  # noqa: F401 -- the fixtures: mirror, ring, served, url
    REAL,
    REAL_FILE,
    SMALL,
    downloaded_names,
    file_requests,
    hub_model,
    mirror,
    poll,
    ring,
    served,
    sha256_of,
    tiny_gguf,
    url,
)


@pytest.fixture
def endpoint(url, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", url)
    return url


@pytest.mark.model
def test_download_puts_the_model_in_the_library_with_progress_lines(endpoint, mirror, paths, capsys):
    assert main(["models", "download", REAL, REAL_FILE]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith(f"{REAL_FILE}  downloading  ") for line in lines)  # plain lines: not a tty
    assert any(line.startswith(f"{REAL_FILE}  done  100%") for line in lines)
    assert len(lines) < 30  # a line per tenth of the way and per state, not one per chunk
    assert "it is in the library as smollm2-135m-instruct-q8_0" in out and "checked against the hub's checksum" in out
    [entry_path] = [line.split("\t")[2] for line in _models_list(capsys) if "\tdownloaded\t" in line]
    assert sha256_of(entry_path) == sha256_of(default_model_path())

    mirror.requests.clear()
    assert main(["models", "download", REAL, REAL_FILE]) == 0
    assert "is already in the library as smollm2-135m-instruct-q8_0" in capsys.readouterr().out
    assert file_requests(mirror) == []


def _models_list(capsys):
    assert main(["models", "list"]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_model_can_be_named_by_its_quantisation_and_a_split_one_by_any_part(endpoint, mirror, paths, capsys):
    assert main(["models", "download", SMALL, "q5_0"]) == 0
    assert "in the library as tiny-Q5_0" in capsys.readouterr().out
    assert main(["models", "download", SMALL, "tiny-F16-00002-of-00002.gguf", "--revision", "main"]) == 0
    assert "in the library as tiny-F16" in capsys.readouterr().out
    assert sorted(downloaded_names(paths)) == ["tiny-F16", "tiny-Q5_0"]


def test_an_unknown_file_or_repository_fails_with_what_there_is(endpoint, mirror, paths, capsys):
    assert main(["models", "download", SMALL, "nope.gguf"]) == 1
    err = capsys.readouterr().err
    assert f"parley: {SMALL} has no model 'nope.gguf'. Its models:" in err and "Q4_0 (tiny-Q4_0.gguf)" in err
    assert f"See them with `parley models files {SMALL}`." in err
    assert main(["models", "download", "nobody/nothing", "x.gguf"]) == 1
    assert "parley: There is no repository nobody/nothing" in capsys.readouterr().err
    assert downloaded_names(paths) == []


def test_a_failed_download_exits_1_with_its_message(endpoint, mirror, paths, capsys):
    mirror.repos[SMALL].wrong_sha256.add("tiny-Q8_0.gguf")
    assert main(["models", "download", SMALL, "tiny-Q8_0.gguf"]) == 1
    err = capsys.readouterr().err
    assert "parley: The download of tiny-Q8_0.gguf did not match the hub's checksum; the file was deleted." in err
    assert downloaded_names(paths) == []


def test_ctrl_c_pauses_and_the_same_command_resumes(endpoint, mirror, paths, capsys):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 64 * 1024
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    command = [sys.executable, "-m", "desktop_app", "models", "download", SMALL, "tiny-Q4_0.gguf"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    reader = threading.Thread(target=lambda: err_lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        assert mirror.faults.held.wait(60), err_lines
        download_id = download_id_for(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
        kept = paths.models_dir / ".downloads" / download_id / "files" / "tiny-Q4_0.gguf"
        poll(lambda: kept.exists() and kept.stat().st_size == 64 * 1024)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        poll(lambda: any("Pausing" in line for line in err_lines))
        mirror.faults.release.set()
        assert process.wait(60) == 1
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    err = "".join(err_lines)
    assert "Paused at 25% (66 kB of 262 kB). The bytes downloaded are kept: run the same command again to resume." in err
    assert kept.stat().st_size == 64 * 1024 and downloaded_names(paths) == []

    mirror.requests.clear()
    assert main(["models", "download", SMALL, "tiny-Q4_0.gguf"]) == 0
    captured = capsys.readouterr()
    assert "Resuming tiny-Q4_0.gguf from 66 kB of 262 kB." in captured.err
    assert file_requests(mirror)[0]["range"] == f"bytes={64 * 1024}-"
    assert downloaded_names(paths) == ["tiny-Q4_0"]
    assert Path(paths.models_dir / "parley-tests__tiny-GGUF" / "tiny-Q4_0.gguf").read_bytes() == tiny_gguf(0)


def test_the_progress_bar_on_a_terminal_redraws_one_line_with_speed_and_time_left():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    model = hub_model_stub()
    stream = Terminal()
    bar = _DownloadProgress(stream)
    bar.show(DownloadStatus("id", model, DownloadState.DOWNLOADING, 50_000_000, 200_000_000, speed=5_000_000,
                            eta=30.0))
    bar.show(DownloadStatus("id", model, DownloadState.DOWNLOADING, 100_000_000, 200_000_000, speed=5_000_000,
                            eta=20.0))
    bar.end()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    last = text.split("\r")[-1]
    assert "model.gguf [" in last and "#" in last and " 50.0%" in last and "100 MB of 200 MB" in last
    assert "5 MB/s" in last and "0:20 left" in last


def hub_model_stub():
    from desktop_app.core.hub_files import HubFile, HubModelFile

    return HubModelFile("o/r", "Q4", (HubFile("o/r", "model.gguf", 200_000_000, None, "main"),))
