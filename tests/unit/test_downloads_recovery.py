"""Downloads that meet a fault at the edges: the library cannot be written, a crash between the
library and the partial folder, a second request racing the finish, a stalled connection at close,
and the hub and token a download goes to."""

import errno
import threading
import time
from pathlib import Path

from desktop_app.core.downloads import DownloadState
from desktop_app.core.models import ModelLibrary
from tests.hub_download_repos import (  # noqa: F401 -- the fixtures: managers, mirror, ring, served, url
    GATED,
    SMALL,
    TOKEN,
    downloaded_names,
    file_requests,
    hub_model,
    managers,
    mirror,
    partial,
    poll,
    ring,
    served,
    tiny_gguf,
    url,
)


def _library_names(library):
    return [e.name for e in library.entries() if not e.builtin]


# -- the library cannot be written -------------------------------------------------------
def test_a_library_that_cannot_be_saved_fails_the_download_lists_nothing_and_a_retry_installs_it_once(
        mirror, managers, paths, monkeypatch):
    from desktop_app.core import models

    library = ModelLibrary(paths)
    real_write = models.atomic_write_text

    def disk_full(path, text):  # a real full disk needs root rights to make; this is its error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "atomic_write_text", disk_full)
    manager = managers(library)
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "disk"
    assert failed.error.startswith("Parley could not add tiny-Q4_0.gguf to the library (No space left on device).")
    assert "The downloaded files are kept" in failed.error and "then try again" in failed.error
    assert _library_names(library) == [] and downloaded_names(paths) == []  # no phantom, in memory or on disk
    assert partial(manager, status.id, "tiny-Q4_0.gguf").read_bytes() == tiny_gguf(0)  # moved back, for the retry
    assert not (paths.models_dir / "parley-tests__tiny-GGUF" / "tiny-Q4_0.gguf").exists()

    monkeypatch.setattr(models, "atomic_write_text", real_write)  # space freed
    mirror.requests.clear()
    done = manager.wait(manager.retry(status.id).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert done.entry_name == "tiny-Q4_0" and Path(done.path).read_bytes() == tiny_gguf(0)
    assert _library_names(library) == ["tiny-Q4_0"] and downloaded_names(paths) == ["tiny-Q4_0"]  # once, no "(2)"
    assert file_requests(mirror) == []  # the verified bytes were kept: nothing fetched again


# -- a crash between the library and the partial folder -----------------------------------
def _install_by_hand(library, paths, mirror, name="tiny-Q4_0.gguf"):
    """Put the model in the library as a finished download would, without a manager."""
    folder = paths.models_dir / "parley-tests__tiny-GGUF"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(mirror.repos[SMALL].files[name])
    file = hub_model(mirror, SMALL, name).first
    origin = {"repo_id": SMALL, "revision": file.revision,
              "files": [{"path": file.path, "sha256": file.sha256, "size": file.size}]}
    return library.add_downloaded(folder / name, origin=origin, name=Path(name).stem)


def _paused_partial(mirror, managers, model, held_bytes=32 * 1024):
    """A download stopped mid-file by a closing app: its partial folder and download.json stay."""
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = held_bytes
    first = managers()
    status = first.add(model)
    assert mirror.faults.held.wait(30)
    poll(lambda: first.status(status.id).done_bytes == held_bytes)
    first.close()
    mirror.faults.release.set()
    assert (first.folder / status.id / "download.json").is_file()
    return first.folder / status.id, status.id


def test_a_download_found_in_the_library_at_start_is_done_and_its_partial_folder_deleted(mirror, managers, paths):
    # The state a crash leaves after add_downloaded saved models.json but before the partial folder went.
    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    folder, download_id = _paused_partial(mirror, managers, model)
    library = ModelLibrary(paths)
    entry = _install_by_hand(library, paths, mirror)
    mirror.requests.clear()

    again = managers(ModelLibrary(paths))
    status = again.status(download_id)
    assert status.state == DownloadState.DONE and status.entry_name == entry.name and status.path == entry.path
    assert status.done_bytes == status.total_bytes and not status.interrupted
    assert not folder.exists()  # nothing to resume: no 0-byte offer, no redundant bytes left on disk
    assert again.resume(download_id).state == DownloadState.DONE
    assert file_requests(mirror, "HEAD") == [] and file_requests(mirror) == []
    assert downloaded_names(paths) == ["tiny-Q4_0"]


def test_resuming_a_download_whose_model_is_in_the_library_finishes_it_without_fetching(mirror, managers, paths):
    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    folder, download_id = _paused_partial(mirror, managers, model)
    library = ModelLibrary(paths)
    manager = managers(library)
    assert manager.status(download_id).state == DownloadState.PAUSED  # not in the library yet
    entry = _install_by_hand(library, paths, mirror)  # e.g. by `parley models download` meanwhile
    mirror.requests.clear()

    resumed = manager.resume(download_id)
    assert resumed.state == DownloadState.DONE and resumed.entry_name == entry.name
    assert not folder.exists() and manager.seen.states(download_id)[-1] == DownloadState.DONE
    assert file_requests(mirror, "HEAD") == [] and file_requests(mirror) == []
    assert _library_names(library) == ["tiny-Q4_0"]


# -- a second request racing the finish ---------------------------------------------------
def test_asking_again_while_a_download_finishes_does_not_install_it_twice(mirror, managers, paths):
    """The race made certain rather than timed: the second add reads the library before the
    install (so finds nothing), and takes the manager's lock only after the worker set DONE,
    while the worker's run is still on record."""
    library = ModelLibrary(paths)
    manager = managers(library)
    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    done_set, add_returned = threading.Event(), threading.Event()
    real_delete, real_in_library = manager._delete_partial, manager._in_library

    def delete_partial(record):  # the worker, after setting DONE and before clearing its run
        if record.state == DownloadState.DONE:
            done_set.set()
            add_returned.wait(30)
        real_delete(record)

    calls = []

    def in_library(wanted):
        present = real_in_library(wanted)
        calls.append(present)
        if len(calls) == 2:  # the second add: it read the library before the install
            assert present is None
            assert done_set.wait(30)
        return present

    manager._delete_partial, manager._in_library = delete_partial, in_library
    first = manager.add(model)
    poll(lambda: manager.status(first.id).state == DownloadState.DOWNLOADING or done_set.is_set())
    second = manager.add(model)  # blocks in in_library until the worker set DONE
    add_returned.set()
    assert second.id == first.id and second.state == DownloadState.DONE
    done = manager.wait(first.id, 30)
    assert done.state == DownloadState.DONE and done.entry_name == "tiny-Q4_0"
    assert _library_names(library) == ["tiny-Q4_0"] and downloaded_names(paths) == ["tiny-Q4_0"]
    assert len(file_requests(mirror)) == 1


# -- a stalled connection at close --------------------------------------------------------
def test_close_cuts_a_stalled_connection_at_once_and_the_next_manager_resumes_from_the_bytes(
        mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.hold_after_bytes = 48 * 1024  # the server goes silent mid-file, the connection stays open
    before = set(threading.enumerate())
    first = managers(timeout=60.0)  # waiting for the timeout would be a minute, not the few seconds allowed
    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    status = first.add(model)
    assert mirror.faults.held.wait(30)
    poll(lambda: first.status(status.id).done_bytes == 48 * 1024)

    started = time.monotonic()
    first.close()
    took = time.monotonic() - started
    # Loose on purpose (a slow machine may take a moment): the point is it did not wait out the 60 s timeout.
    assert took < 10, f"close() took {took:.1f} s"
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("download-")]  # ended
    stopped = first.status(status.id)
    assert stopped.state == DownloadState.PAUSED and stopped.interrupted and stopped.error is None
    on_disk = partial(first, status.id, "tiny-Q4_0.gguf").stat().st_size
    assert on_disk == 48 * 1024

    mirror.requests.clear()
    second = managers()
    assert second.status(status.id).done_bytes == on_disk
    done = second.wait(second.resume(status.id).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert Path(done.path).read_bytes() == tiny_gguf(0)
    assert file_requests(mirror)[0]["range"] == f"bytes={on_disk}-"
    assert downloaded_names(paths) == ["tiny-Q4_0"]


# -- the hub and the token a download goes to ---------------------------------------------
def test_a_token_saved_after_a_gated_failure_is_read_on_the_worker_by_retry(mirror, managers, url, paths):
    from desktop_app.core.hub_tokens import hub_token, save_hub_token

    readers = []

    def read_token():  # what the app passes: the keyring, read when a download starts
        readers.append(threading.current_thread().name)
        return hub_token(url)

    manager = managers(token=read_token)
    status = manager.add(hub_model(mirror, GATED, "tiny-Q4_0.gguf"))
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "gated"
    assert {h.get("authorization") for h in file_requests(mirror, "HEAD")} == {None}

    save_hub_token(url, TOKEN)  # `parley models login`, or the window's token box
    mirror.requests.clear()
    done = manager.wait(manager.retry(status.id).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert {h.get("authorization") for h in file_requests(mirror) + file_requests(mirror, "HEAD")} == {
        f"Bearer {TOKEN}"}
    assert len(readers) == 2 and all(name.startswith("download-") for name in readers)  # never the caller's thread
    assert downloaded_names(paths) == ["tiny-Q4_0"]


def test_a_download_keeps_going_to_the_hub_it_was_found_on(mirror, managers, url, paths):
    import json

    from tests.chroma_server import free_port

    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    folder, download_id = _paused_partial(mirror, managers, model)
    saved = json.loads((folder / "download.json").read_text())
    assert saved["endpoint"] == url

    elsewhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a request to it would fail
    manager = managers(endpoint=elsewhere, token="hf_for_elsewhere")
    mirror.requests.clear()
    done = manager.wait(manager.resume(download_id).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert file_requests(mirror)[0]["range"] == "bytes=32768-"
    # The token belongs to the manager's hub: it is not sent to the one the download came from.
    assert {h.get("authorization") for h in file_requests(mirror) + file_requests(mirror, "HEAD")} == {None}
    assert ModelLibrary(paths).get("tiny-Q4_0").origin["endpoint"] == url


def test_an_endpoint_changed_later_or_missing_from_an_older_file_is_handled(mirror, managers, url, paths):
    import json

    from tests.chroma_server import free_port

    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    folder, download_id = _paused_partial(mirror, managers, model)
    state = folder / "download.json"
    older = json.loads(state.read_text())
    del older["endpoint"]  # written before downloads remembered their hub
    state.write_text(json.dumps(older))

    manager = managers()  # on the mirror: the old file's download goes there
    manager.set_hub(f"http://127.0.0.1:{free_port()}", None)  # changed in the settings afterwards
    mirror.requests.clear()
    done = manager.wait(manager.resume(download_id).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert file_requests(mirror)[0]["range"] == "bytes=32768-"
    assert manager.endpoint.startswith("http://127.0.0.1:") and manager.endpoint != url
