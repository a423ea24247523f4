"""Downloads into the library from a real HTTP hub mirror on loopback: the happy path, resume, restart, cancel,
the parallel limit and the library's promise (never a model that is incomplete or unverified)."""

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from desktop_app.core.downloads import DownloadState
from desktop_app.core.models import ModelLibrary, check_gguf_file, default_model_path
from tests.hub_download_repos import (  # noqa: F401 -- the fixtures: managers, mirror, ring, served, url
    REAL,
    REAL_FILE,
    SMALL,
    Seen,
    downloaded_names,
    file_requests,
    hub_model,
    managers,
    mirror,
    partial,
    poll,
    ring,
    served,
    sha256_of,
    tiny_gguf,
    url,
)


# -- the happy path ----------------------------------------------------------------------
@pytest.mark.model
def test_a_download_joins_the_library_only_once_verified_and_loads(mirror, managers, paths):
    library = ModelLibrary(paths)
    manager = managers(library)
    model = hub_model(mirror, REAL, REAL_FILE, name="Q8_0")
    status = manager.add(model)
    assert status.state in (DownloadState.QUEUED, DownloadState.DOWNLOADING)
    done = manager.wait(status.id, timeout=120)

    assert done.state == DownloadState.DONE, done.error
    assert done.done_bytes == done.total_bytes == default_model_path().stat().st_size and done.fraction == 1.0
    path = Path(done.path)
    assert path == paths.models_dir / "HuggingFaceTB__SmolLM2-135M-Instruct-GGUF" / REAL_FILE
    assert sha256_of(path) == sha256_of(default_model_path())
    assert check_gguf_file(path).architecture == "llama"
    entry = library.get(done.entry_name)
    assert entry.copied and entry.path == str(path) and entry.info["architecture"] == "llama"
    assert entry.origin["repo_id"] == REAL and entry.origin["revision"] == mirror.repos[REAL].sha
    assert entry.origin["files"] == [{"path": REAL_FILE, "sha256": sha256_of(path), "size": path.stat().st_size}]
    assert downloaded_names(paths) == [done.entry_name]  # what another reader of models.json sees

    states = manager.seen.states()
    assert states[0] == DownloadState.QUEUED and states[-1] == DownloadState.DONE
    assert states.index(DownloadState.DOWNLOADING) < states.index(DownloadState.VERIFYING) < len(states) - 1
    assert not (manager.folder / done.id).exists()  # the partial folder is gone
    heads, gets = file_requests(mirror, "HEAD"), file_requests(mirror)
    assert len(heads) == 1 and len(gets) == 1 and "range" not in gets[0]  # a first download asks for all of it
    assert "authorization" not in gets[0]  # no token: none sent (not even one found on the machine)


def test_the_library_never_lists_a_download_before_it_is_verified(mirror, managers, paths):
    library = ModelLibrary(paths)
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 100_000
    manager = managers(library)
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: manager.status(status.id).done_bytes == 100_000)
    assert downloaded_names(paths) == [] and [e.name for e in library.entries() if not e.builtin] == []
    assert not (paths.models_dir / "parley-tests__tiny-GGUF").exists()
    mirror.faults.release.set()
    assert manager.wait(status.id, 30).state == DownloadState.DONE
    assert downloaded_names(paths) == ["tiny-Q4_0"]


def test_a_split_model_downloads_every_part_into_one_folder(mirror, managers, paths):
    manager = managers()
    model = hub_model(mirror, SMALL, "tiny-F16-00001-of-00002.gguf", "tiny-F16-00002-of-00002.gguf", name="F16")
    done = manager.wait(manager.add(model).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert done.label == "tiny-F16 (2 parts)" and done.entry_name == "tiny-F16"
    folder = paths.models_dir / "parley-tests__tiny-GGUF"
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-F16-00001-of-00002.gguf", "tiny-F16-00002-of-00002.gguf"]
    assert (folder / "tiny-F16-00002-of-00002.gguf").read_bytes() == tiny_gguf(4)[:100_000]
    library = ModelLibrary(paths)
    entry = library.get("tiny-F16")
    assert entry.path == str(folder / "tiny-F16-00001-of-00002.gguf") and len(entry.origin["files"]) == 2
    library.remove("tiny-F16")  # the library owns what it downloaded: every part goes, and the folder
    assert not folder.exists()


def test_the_same_model_twice_is_one_download_and_one_in_the_library_is_done_at_once(mirror, managers, paths):
    manager = managers()
    model = hub_model(mirror, SMALL, "tiny-Q5_0.gguf")
    first = manager.add(model)
    assert manager.add(model).id == first.id and len(manager.downloads()) == 1
    assert manager.wait(first.id, 30).state == DownloadState.DONE
    mirror.requests.clear()
    again = managers().add(model)  # a new manager, as after a restart
    assert again.state == DownloadState.DONE and again.entry_name == "tiny-Q5_0"
    assert file_requests(mirror) == [] and downloaded_names(paths) == ["tiny-Q5_0"]


# -- resume ------------------------------------------------------------------------------
@pytest.mark.model
def test_a_download_that_drops_mid_file_resumes_from_its_bytes(mirror, managers):
    mirror.faults.drop_after_bytes, mirror.faults.drops_left = 30_000_000, 1
    manager = managers()
    done = manager.wait(manager.add(hub_model(mirror, REAL, REAL_FILE)).id, 120)
    assert done.state == DownloadState.DONE, done.error
    assert sha256_of(done.path) == sha256_of(default_model_path())
    gets = file_requests(mirror)
    assert len(gets) == 2 and "range" not in gets[0]
    assert gets[1]["range"] == "bytes=30000000-"  # continued where the connection dropped, not from the start
    assert gets[1]["if-range"] == f'"{sha256_of(default_model_path())}"'  # and only if the file is the same


def test_a_server_that_answers_200_to_a_range_request_restarts_the_file(mirror, managers):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.drop_after_bytes, mirror.faults.drops_left = 100_000, 1
    mirror.faults.ignore_range = True
    manager = managers()
    done = manager.wait(manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf")).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert Path(done.path).read_bytes() == tiny_gguf(0)  # the whole file once, not its start twice
    gets = file_requests(mirror)
    assert len(gets) == 2 and gets[1]["range"] == "bytes=100000-"


def test_a_reply_for_another_part_of_the_file_is_refused_and_nothing_appended(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.drop_after_bytes, mirror.faults.drops_left = 100_000, 1
    mirror.faults.misplaced_range = 5_000
    manager = managers()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "server"
    assert "with another part of the file (bytes 105000-" in failed.error and "nothing of it was kept" in failed.error
    kept = partial(manager, status.id, "tiny-Q4_0.gguf")
    assert kept.read_bytes() == tiny_gguf(0)[:100_000] and failed.done_bytes == 100_000
    assert downloaded_names(paths) == []
    mirror.faults.misplaced_range = 0
    assert manager.retry(status.id).state in (DownloadState.QUEUED, DownloadState.DOWNLOADING)
    done = manager.wait(status.id, 30)
    assert done.state == DownloadState.DONE and Path(done.path).read_bytes() == tiny_gguf(0)


def test_a_file_that_changed_on_the_hub_starts_again_rather_than_mixing_two_files(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 64 * 1024
    manager = managers()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: manager.status(status.id).done_bytes == 64 * 1024)
    manager.pause(status.id)
    mirror.faults.release.set()
    assert manager.wait(status.id, 30).state == DownloadState.PAUSED
    mirror.repos[SMALL].replace_file("tiny-Q4_0.gguf", tiny_gguf(5))  # a new commit on the hub meanwhile
    mirror.requests.clear()
    manager.resume(status.id)
    done = manager.wait(status.id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert Path(done.path).read_bytes() == tiny_gguf(5)
    assert "range" not in file_requests(mirror)[0]  # the old bytes were dropped, not continued
    assert ModelLibrary(paths).get("tiny-Q4_0").origin["files"][0]["sha256"] == hashlib.sha256(tiny_gguf(5)).hexdigest()


def test_if_range_brings_a_changed_file_back_whole(mirror, url, tmp_path):
    """Even when only the GET sees the change: a stale ETag gets the whole new file (200), started from 0."""
    from desktop_app.core.download_transfer import PartTransfer

    old, new = tiny_gguf(0), tiny_gguf(6)
    file = hub_model(mirror, SMALL, "tiny-Q4_0.gguf").first
    partial = tmp_path / "tiny.part"
    partial.write_bytes(old[:50_000])
    mirror.repos[SMALL].replace_file("tiny-Q4_0.gguf", new)
    from dataclasses import replace

    transfer = PartTransfer(replace(file, size=len(new), sha256=hashlib.sha256(new).hexdigest()), partial, endpoint=url,
                            etag=f'"{hashlib.sha256(old).hexdigest()}"')
    transfer.fetch()
    assert partial.read_bytes() == new and transfer.digest() == hashlib.sha256(new).hexdigest()
    [get] = file_requests(mirror)
    assert get["range"] == "bytes=50000-" and get["if-range"] == f'"{hashlib.sha256(old).hexdigest()}"'


# -- verification ------------------------------------------------------------------------
def test_a_wrong_checksum_deletes_the_file_says_so_and_leaves_the_library_alone(mirror, managers, paths):
    mirror.repos[SMALL].wrong_sha256.add("tiny-Q4_0.gguf")
    manager = managers()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "checksum"
    assert failed.error == ("The download of tiny-Q4_0.gguf did not match the hub's checksum; the file was deleted. "
                            "Try again; if it happens again the mirror may be serving a different file.")
    assert not (partial(manager, status.id, "tiny-Q4_0.gguf")).exists() and failed.done_bytes == 0
    assert downloaded_names(paths) == [] and not (paths.models_dir / "parley-tests__tiny-GGUF").exists()
    # Remembered as failed, with its reason, by the next manager.
    again = managers().status(status.id)
    assert again.state == DownloadState.FAILED and again.error == failed.error


def test_a_verified_file_that_is_not_a_model_is_refused_before_it_joins_the_library(mirror, managers, paths):
    manager = managers()
    failed = manager.wait(manager.add(hub_model(mirror, SMALL, "not-a-model.gguf")).id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "file"
    assert "is not a GGUF model file" in failed.error
    assert downloaded_names(paths) == [] and not (paths.models_dir / "parley-tests__tiny-GGUF").exists()


# -- the disk ----------------------------------------------------------------------------
def test_a_full_disk_mid_file_fails_clearly_and_keeps_the_bytes_for_a_resume(mirror, managers, paths, monkeypatch):
    import errno

    from desktop_app.core import download_transfer

    mirror.faults.chunk_size = 16 * 1024
    real_write = download_transfer.write_chunk
    written = []

    def full_after_100k(handle, data):  # a real full disk needs root rights to make; this is its error
        if sum(written) + len(data) > 100_000:
            room = 100_000 - sum(written)
            handle.write(data[:room])  # a full disk takes what fits, then refuses
            written.append(room)
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        return real_write(handle, data)

    monkeypatch.setattr(download_transfer, "write_chunk", full_after_100k)
    manager = managers()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "disk"
    assert failed.error.startswith("The disk is full: the download of tiny-Q4_0.gguf stopped after")
    assert "What was downloaded is kept; free at least" in failed.error and "then resume it" in failed.error
    kept = partial(manager, status.id, "tiny-Q4_0.gguf")
    assert kept.read_bytes() == tiny_gguf(0)[:100_000]  # the bytes that fitted, kept
    assert downloaded_names(paths) == []

    monkeypatch.setattr(download_transfer, "write_chunk", real_write)  # space freed
    mirror.requests.clear()
    manager.resume(status.id)
    done = manager.wait(status.id, 30)
    assert done.state == DownloadState.DONE and Path(done.path).read_bytes() == tiny_gguf(0)
    assert file_requests(mirror)[0]["range"] == "bytes=100000-"


def test_the_disk_space_check_refuses_a_download_that_cannot_fit(mirror, managers, paths):
    from dataclasses import replace

    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    huge = replace(model, parts=(replace(model.first, size=10 ** 15),))
    manager = managers()
    failed = manager.wait(manager.add(huge).id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "disk"
    assert failed.error.startswith("There is not enough disk space to download tiny-Q4_0.gguf: it needs 1,000,000.0 GB")
    assert f"and {paths.models_dir} has" in failed.error and "Free some space, then try again." in failed.error
    assert file_requests(mirror, "HEAD") == [] and file_requests(mirror) == []  # checked before anything is fetched


# -- pause, restart, cancel --------------------------------------------------------------
def test_pause_keeps_the_bytes_and_resume_continues_from_them(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 80 * 1024
    manager = managers()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: manager.status(status.id).done_bytes == 80 * 1024)
    assert manager.pause(status.id).state == DownloadState.PAUSED  # at once, for the window
    mirror.faults.release.set()
    paused = manager.wait(status.id, 30)
    assert paused.state == DownloadState.PAUSED and paused.speed == 0 and paused.eta is None
    on_disk = (partial(manager, status.id, "tiny-Q4_0.gguf")).stat().st_size
    assert 80 * 1024 <= on_disk < len(tiny_gguf(0)) and paused.done_bytes == on_disk
    assert downloaded_names(paths) == []
    mirror.requests.clear()
    manager.resume(status.id)
    done = manager.wait(status.id, 30)
    assert done.state == DownloadState.DONE and Path(done.path).read_bytes() == tiny_gguf(0)
    assert file_requests(mirror)[0]["range"] == f"bytes={on_disk}-"


@pytest.mark.model
def test_a_restart_mid_download_continues_from_the_bytes_on_disk(mirror, managers, paths):
    mirror.faults.hold_after_bytes = 8 * 1024 * 1024
    mirror.faults.chunk_delay = 0.01  # slow enough that closing stops it within a chunk or two
    first = managers()
    model = hub_model(mirror, REAL, REAL_FILE)
    status = first.add(model)
    assert mirror.faults.held.wait(60)
    mirror.faults.release.set()
    first.close()  # the app quits mid-file
    stopped = first.status(status.id)
    assert stopped.state == DownloadState.PAUSED and stopped.interrupted
    saved = json.loads((first.folder / status.id / "download.json").read_text())
    assert saved["state"] == "running" and saved["model"]["parts"][0]["path"] == REAL_FILE
    on_disk = partial(first, status.id, REAL_FILE).stat().st_size
    assert 8 * 1024 * 1024 <= on_disk < stopped.total_bytes
    assert downloaded_names(paths) == []

    mirror.faults.chunk_delay = 0
    mirror.requests.clear()
    second = managers()  # the app starts again
    [listed] = second.downloads()
    assert (listed.id, listed.state, listed.interrupted, listed.done_bytes) == (
        status.id, DownloadState.PAUSED, True, on_disk)
    assert file_requests(mirror, "HEAD") == []  # nothing uses the network before the user says so
    second.resume(status.id)
    done = second.wait(status.id, 120)
    assert done.state == DownloadState.DONE, done.error
    assert sha256_of(done.path) == sha256_of(default_model_path())
    assert [h["range"] for h in file_requests(mirror)] == [f"bytes={on_disk}-"]
    assert downloaded_names(paths) == [done.entry_name]


def test_a_download_paused_by_the_user_comes_back_paused_and_not_interrupted(mirror, managers):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 32 * 1024
    first = managers()
    status = first.add(hub_model(mirror, SMALL, "tiny-Q8_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: first.status(status.id).done_bytes == 32 * 1024)
    first.pause(status.id)
    mirror.faults.release.set()
    first.wait(status.id, 30)
    first.close()
    listed = managers().status(status.id)
    assert listed.state == DownloadState.PAUSED and not listed.interrupted and listed.done_bytes >= 32 * 1024


def test_cancel_deletes_the_partial_files_and_adds_nothing(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 48 * 1024
    manager = managers()
    running = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: (partial(manager, running.id, "tiny-Q4_0.gguf")).exists()
         and manager.status(running.id).done_bytes == 48 * 1024)
    assert manager.cancel(running.id).state == DownloadState.CANCELLED
    mirror.faults.release.set()
    cancelled = manager.wait(running.id, 30)
    assert cancelled.state == DownloadState.CANCELLED and cancelled.done_bytes == 0
    poll(lambda: not (manager.folder / running.id).exists(), timeout=10)
    assert downloaded_names(paths) == [] and not (paths.models_dir / "parley-tests__tiny-GGUF").exists()
    assert manager.seen.states(running.id)[-1] == DownloadState.CANCELLED

    # A paused one: its bytes are deleted at once.
    mirror.faults.hold_after_bytes = 16 * 1024
    mirror.faults.held.clear()
    mirror.faults.release.clear()
    paused = manager.add(hub_model(mirror, SMALL, "tiny-Q5_0.gguf"))
    assert mirror.faults.held.wait(30)
    poll(lambda: manager.status(paused.id).done_bytes == 16 * 1024)
    manager.pause(paused.id)
    mirror.faults.release.set()
    manager.wait(paused.id, 30)
    assert (manager.folder / paused.id).exists()
    manager.cancel(paused.id)
    assert not (manager.folder / paused.id).exists()
    assert managers().downloads() == []  # nothing left for the next start either
    manager.forget(running.id)
    assert [s.id for s in manager.downloads()] == [paused.id]


def test_at_most_max_parallel_downloads_run_and_the_others_wait_queued(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.chunk_delay = 0.02
    running_counts = []
    states = {}
    lock = threading.Lock()

    def watch(status):
        with lock:
            states[status.id] = status.state
            running_counts.append(sum(s in (DownloadState.DOWNLOADING, DownloadState.VERIFYING)
                                      for s in states.values()))

    seen = Seen()

    def on_change(status):
        seen(status)
        watch(status)

    manager = managers(max_parallel=2, seen=on_change)
    ids = [manager.add(hub_model(mirror, SMALL, name)).id for name in ("tiny-Q4_0.gguf", "tiny-Q5_0.gguf",
                                                                           "tiny-Q8_0.gguf")]
    assert manager.status(ids[2]).state == DownloadState.QUEUED
    for download_id in ids:
        assert manager.wait(download_id, 60).state == DownloadState.DONE
    assert max(running_counts) == 2
    third = [s.state for s in seen.statuses if s.id == ids[2]]
    assert third[0] == DownloadState.QUEUED and DownloadState.DOWNLOADING in third
    assert sorted(downloaded_names(paths)) == ["tiny-Q4_0", "tiny-Q5_0", "tiny-Q8_0"]


# -- progress ----------------------------------------------------------------------------
def test_progress_reports_bytes_speed_and_time_left_at_most_ten_times_a_second(mirror, managers):
    from desktop_app.core.downloads import PROGRESS_INTERVAL

    mirror.faults.chunk_size = 8 * 1024
    mirror.faults.chunk_delay = 0.01
    manager = managers()
    started = time.monotonic()
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    done = manager.wait(status.id, 60)
    elapsed = time.monotonic() - started
    assert done.state == DownloadState.DONE
    progress = [s for s in manager.seen.statuses if s.state == DownloadState.DOWNLOADING]
    done_bytes = [s.done_bytes for s in progress]
    assert done_bytes == sorted(done_bytes) and done_bytes[-1] > 0
    assert all(s.total_bytes == len(tiny_gguf(0)) for s in progress)
    # Whatever the machine's speed: no more reports than the interval allows (plus the state change).
    assert len(progress) <= elapsed / PROGRESS_INTERVAL + 2
    assert all(s.speed >= 0 and (s.eta is None or s.eta >= 0) for s in progress)


def test_asking_again_for_a_download_still_being_cancelled_takes_it_up_again(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 32 * 1024
    manager = managers()
    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    status = manager.add(model)
    assert mirror.faults.held.wait(30)
    manager.cancel(status.id)  # its thread is still waiting for the held connection
    again = manager.add(model)
    assert again.id == status.id and again.state in (DownloadState.QUEUED, DownloadState.DOWNLOADING)  # its worker may already run it
    mirror.faults.release.set()
    done = manager.wait(status.id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert Path(done.path).read_bytes() == tiny_gguf(0) and downloaded_names(paths) == ["tiny-Q4_0"]
