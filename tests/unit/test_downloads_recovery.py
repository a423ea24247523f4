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
