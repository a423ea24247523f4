"""Download a hub adapter and add it to the library: refused before any download when it does not fit.

    candidate = find_in_repo(hub, "alice/smollm2-lora", None, model_path)
    entry = download_adapter(context.downloads, candidate, library, model_path, progress=show, cancel=stop)

The files (a GGUF adapter, or a PEFT folder's config and weights, as one download) go through
the app's download manager, which resumes, retries and checks them against the sizes and
SHA-256 the hub reports; then the plugin's installer
(:func:`~desktop_app_lora.hub_install.install_adapter`) adds a GGUF adapter as it is, or
converts a PEFT one for the model first. A cancelled or refused download adds nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from desktop_app.api import HubRepoNotFoundError, check_gguf_file
from desktop_app_lora.adapters import AdapterError
from desktop_app_lora.hub_adapters import model_label
from desktop_app_lora.hub_search import AdapterCandidate, adapter_candidates, judge_candidate

__all__ = ["DownloadCancelled", "DownloadProgress", "download_adapter", "find_in_repo"]


class DownloadCancelled(AdapterError):
    """The download was cancelled; nothing was added."""


@dataclass(frozen=True)
class DownloadProgress:
    """How far a download is: bytes of all its files, and what is happening in words."""

    done: int
    total: int
    message: str


def find_in_repo(hub: Any, repo_id: str, selector: str | None, model_path: Path | str) -> AdapterCandidate:
    """The adapter ``selector`` names in ``repo_id`` (a GGUF file's path, or a PEFT folder; None:
    the only adapter there), with its verdict for the model at ``model_path``.

    Raises HubError when the repository cannot be read, AdapterError naming the adapters there
    when ``selector`` does not pick exactly one.
    """
    details = hub.details(repo_id)
    found = adapter_candidates(details.repo_id, details.files)
    if not found:
        raise HubRepoNotFoundError(f"{details.repo_id} holds no LoRA adapter (no GGUF file, and no folder "
                                   "with an adapter_config.json).")

    def name_of(kind: str, folder: str, files: tuple) -> str:
        return files[0].path if kind == "gguf" else (folder or ".")

    wanted = (selector or "").strip().strip("/")
    if wanted in ("", "."):
        chosen = [c for c in found if c[0] == "peft" and not c[2]] if wanted == "." else found
    else:
        chosen = [c for c in found if name_of(c[0], c[2], c[3]) == wanted
                  or (c[0] == "peft" and f"{c[2]}/adapter_config.json".lstrip("/") == wanted)]
    if len(chosen) != 1:
        names = ", ".join(name_of(k, f, files) for k, _n, f, files in found)
        if not chosen:
            raise AdapterError(f"{details.repo_id} has no adapter {wanted!r}. Its adapters: {names}.")
        raise AdapterError(f"{details.repo_id} holds several adapters; name the one to download: {names}.")
    kind, name, folder, files = chosen[0]
    model = check_gguf_file(model_path)
    base = next((t.split(":", 2)[2] for t in details.tags if t.startswith("base_model:adapter:")), details.base_model)
    verdict = judge_candidate(hub, kind, name, files, model, model_label(model, Path(model_path).name), base)
    if verdict is None:
        raise AdapterError(f"{files[0].path} in {details.repo_id} is a model, not a LoRA adapter.")
    return AdapterCandidate(details.repo_id, kind, name, files, verdict, folder, details.downloads, details.likes,
                            details.license, details.gated)


def download_adapter(manager: Any, candidate: AdapterCandidate, library: Any, model_path: Path | str, *,
                     name: str | None = None, progress: Callable[[DownloadProgress], None] | None = None,
                     cancel: threading.Event | None = None) -> Any:
    """Download ``candidate`` through the app's download ``manager`` and return its library entry.

    Refuses, before anything is downloaded, an adapter whose verdict is not usable (the reason
    is the message). The manager checks each file's size and SHA-256, then the plugin's
    installer adds a GGUF adapter, or converts a PEFT one for ``model_path`` and adds that.
    Blocks until it is in the library: run it off the GUI thread. ``progress`` hears how far it
    is; ``cancel`` stops it and deletes what arrived. Raises AdapterError (DownloadCancelled
    when cancelled) with the manager's or the installer's reason; a download that failed on
    the network keeps its bytes, so asking again resumes it.
    """
    from desktop_app.api import DownloadState

    verdict = candidate.compatibility
    model_path = Path(model_path)
    if not verdict.usable:
        raise AdapterError(f"{candidate.label} does not fit {model_path.name}, so it was not downloaded: "
                           f"{verdict.reason}")
    status = manager.add(candidate.download(model_path, name))
    cancelled = False
    while True:
        if cancel is not None and cancel.is_set() and not cancelled:
            cancelled = True
            manager.cancel(status.id)
        status = manager.wait(status.id, timeout=0.2)
        if progress is not None:
            progress(DownloadProgress(status.done_bytes, status.total_bytes, _message(status, candidate, model_path)))
        if status.state not in (DownloadState.QUEUED, DownloadState.DOWNLOADING, DownloadState.VERIFYING):
            break
    if status.state == DownloadState.DONE:
        entry = library.find(status.entry_name or "")
        if entry is None:
            raise AdapterError(f"{candidate.label} was downloaded, but it is not in the adapter library.")
        return entry
    if status.state == DownloadState.CANCELLED or cancelled:
        if status.state != DownloadState.CANCELLED:
            manager.cancel(status.id)
        # A cancelled download is marked at once, but its thread deletes what arrived as it
        # stops: "nothing was added" holds only once it has.
        manager.wait(status.id, timeout=60)
        raise DownloadCancelled(f"The download of {candidate.label} was cancelled; nothing was added.")
    if status.state == DownloadState.PAUSED:
        raise AdapterError(f"The download of {candidate.label} is paused; download it again to go on "
                           "(or resume it in File → Get models…).")
    if status.error_kind == "file":
        manager.cancel(status.id)  # the files are what the hub has: trying again cannot help
    raise AdapterError(status.error or f"The download of {candidate.label} failed.")


def _message(status: Any, candidate: AdapterCandidate, model_path: Path) -> str:
    state = status.state.value
    if state == "verifying":
        return (f"Checking and converting {candidate.name} for {model_path.name}…" if candidate.kind == "peft"
                else f"Checking {candidate.name}…")
    if state == "queued":
        return "Waiting for another download to finish…"
    if state == "done":
        return f"Downloaded, checked and added as {status.entry_name}."
    if state in ("cancelled", "failed", "paused"):
        return {"cancelled": "Cancelled.", "failed": "The download failed.", "paused": "Paused."}[state]
    if status.message:
        return status.message
    speed = f" · {status.speed / 1e6:.1f} MB/s" if status.speed else ""
    left = f" · {status.eta:.0f} s left" if status.eta else ""
    return f"Downloading {candidate.label}{speed}{left}"
