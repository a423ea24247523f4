"""Downloads through a flaky or refusing hub: retries with back-off, and messages that say what to do."""

from pathlib import Path

from desktop_app.core.downloads import DownloadState
from tests.hub_download_repos import (  # noqa: F401 -- the fixtures: managers, mirror, ring, served, url
    GATED,
    PRIVATE,
    SMALL,
    TOKEN,
    downloaded_names,
    file_requests,
    hub_model,
    managers,
    mirror,
    ring,
    served,
    tiny_gguf,
    url,
)


def test_a_busy_server_is_retried_with_back_off_then_the_download_succeeds(mirror, managers):
    mirror.faults.fail_status, mirror.faults.failures_left = 503, 3
    manager = managers(retries=5, backoff=0.01)
    done = manager.wait(manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf")).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert Path(done.path).read_bytes() == tiny_gguf(0)
    messages = manager.seen.messages()
    assert [m.split(";")[0] for m in messages] == ["The hub answered 503"] * 3
    # The waits double: 0.01 s, 0.02 s, 0.04 s.
    assert [m.split("; ")[1] for m in messages] == [
        "trying again in 0.0 s (attempt 2 of 6)", "trying again in 0.0 s (attempt 3 of 6)",
        "trying again in 0.0 s (attempt 4 of 6)"]


def test_back_off_doubles_from_its_base_up_to_its_cap(mirror, url, tmp_path):
    from desktop_app.core.download_transfer import PartTransfer, fetch_part

    mirror.faults.fail_status, mirror.faults.failures_left = 429, 4
    waits = []

    class Stop:
        """The transfer's stop event, which also records how long each back-off waits."""

        def is_set(self):
            return False

        def wait(self, delay):
            waits.append(delay)
            return False

    transfer = PartTransfer(hub_model(mirror, SMALL, "tiny-Q4_0.gguf").first, tmp_path / "f", endpoint=url,
                            stop=Stop())
    fetch_part(transfer, retries=5, backoff=1.0, max_backoff=5.0)
    assert waits == [1.0, 2.0, 4.0, 5.0]
    assert (tmp_path / "f").read_bytes() == tiny_gguf(0)


def test_retries_are_bounded_and_the_bytes_are_kept(mirror, managers, paths):
    mirror.faults.chunk_size = 16 * 1024
    mirror.faults.drop_after_bytes, mirror.faults.drops_left = 50_000, 1
    manager = managers(retries=2)
    status = manager.add(hub_model(mirror, SMALL, "tiny-Q4_0.gguf"))
    # After the drop, the server is down for good.
    mirror.faults.fail_status, mirror.faults.failures_left = 502, 1000
    failed = manager.wait(status.id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "network"
    assert failed.error.startswith("The download of tiny-Q4_0.gguf failed 3 times in a row (the hub answered 502).")
    assert "downloaded so far are kept: resume it when the connection is back" in failed.error
    assert downloaded_names(paths) == []
    mirror.faults.failures_left = 0
    done = manager.wait(manager.retry(status.id).id, 30)
    assert done.state == DownloadState.DONE and Path(done.path).read_bytes() == tiny_gguf(0)


def test_a_connection_refused_is_retried_then_fails_with_what_to_do(paths):
    from desktop_app.core.downloads import DownloadManager
    from desktop_app.core.hub_files import HubFile, HubModelFile
    from desktop_app.core.models import ModelLibrary
    from tests.chroma_server import free_port
    from tests.hub_download_repos import Seen

    model = HubModelFile(SMALL, "Q4_0", (HubFile(SMALL, "tiny-Q4_0.gguf", 1000, None, "main"),))
    manager = DownloadManager(paths, ModelLibrary(paths), endpoint=f"http://127.0.0.1:{free_port()}", retries=1,
                              backoff=0.01, on_change=Seen())
    try:
        failed = manager.wait(manager.add(model).id, 60)
    finally:
        manager.close()
    assert failed.state == DownloadState.FAILED and failed.error_kind == "network"
    assert "failed 2 times in a row (the connection failed" in failed.error


def test_a_missing_file_says_so_and_is_not_retried(mirror, managers, paths):
    from dataclasses import replace

    model = hub_model(mirror, SMALL, "tiny-Q4_0.gguf")
    gone = replace(model, parts=(replace(model.first, path="renamed-Q4_0.gguf"),))
    manager = managers()
    failed = manager.wait(manager.add(gone).id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "not_found"
    assert failed.error.startswith(f"{SMALL} has no file renamed-Q4_0.gguf on ")
    assert "it may have been renamed or removed" in failed.error
    assert len(file_requests(mirror, "HEAD")) == 1 and file_requests(mirror) == []
    assert downloaded_names(paths) == []


def test_a_gated_repository_says_where_to_accept_the_licence_and_a_token_opens_it(mirror, managers, url, paths):
    manager = managers()
    model = hub_model(mirror, GATED, "tiny-Q4_0.gguf")
    failed = manager.wait(manager.add(model).id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "gated"
    assert failed.error == (f"{GATED} is gated: accept the licence at {url}/{GATED}, then add your token with "
                            "`parley models login`.")
    assert len(file_requests(mirror, "HEAD")) == 1  # a refusal is not retried

    mirror.requests.clear()
    with_token = managers(token=TOKEN)
    done = with_token.wait(with_token.add(model).id, 30)
    assert done.state == DownloadState.DONE, done.error
    assert {h.get("authorization") for h in file_requests(mirror) + file_requests(mirror, "HEAD")} == {
        f"Bearer {TOKEN}"}
    assert downloaded_names(paths) == ["tiny-Q4_0"]


def test_a_private_repository_without_a_token_and_a_refused_token_say_what_to_do(mirror, managers, url):
    model = hub_model(mirror, PRIVATE, "tiny-Q4_0.gguf")
    manager = managers()
    failed = manager.wait(manager.add(model).id, 30)
    assert failed.state == DownloadState.FAILED and failed.error_kind == "not_found"
    assert failed.error.startswith(f"There is no repository {PRIVATE} on {url}")
    assert failed.error.endswith("If it is private, add your token with `parley models login`.")

    wrong = managers(token="hf_wrong")
    refused = wrong.wait(wrong.add(model).id, 30)
    assert refused.state == DownloadState.FAILED and refused.error_kind == "token"
    assert refused.error.startswith(f"The hub at {url} refused your token (for {PRIVATE})")
    assert "`parley models login` to save a new one" in refused.error
