"""Download a hub adapter and add it to the library: refused before any download when it does not fit.

    candidate = find_in_repo(hub, "alice/smollm2-lora", None, model_path)
    entry = download_adapter(hub, candidate, library, model_path, work_dir=cache, progress=show, cancel=stop)

The files (a GGUF adapter, or a PEFT folder's config and weights, as one download) arrive in a
folder of the plugin's cache, checked against the sizes and SHA-256 the hub reports; then
:func:`~desktop_app_lora.hub_install.install_adapter` adds a GGUF adapter as it is, or
converts a PEFT one for the model first. A cancelled or failed download adds nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from desktop_app.api import HubError, HubRepoNotFoundError, check_gguf_file
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


def download_adapter(hub: Any, candidate: AdapterCandidate, library: Any, model_path: Path | str, *,
                     work_dir: Path, name: str | None = None,
                     progress: Callable[[DownloadProgress], None] | None = None,
                     cancel: threading.Event | None = None) -> Any:
    """Download ``candidate`` and add it to ``library`` (a PEFT adapter converted for ``model_path``).

    Refuses, before anything is downloaded, an adapter whose verdict is not usable (the
    reason is the message). Returns the library entry. Raises AdapterError (DownloadCancelled
    when ``cancel`` is set; ConversionError when a PEFT adapter cannot be converted) or HubError.
    """
    from desktop_app_lora.hub_install import install_adapter

    verdict = candidate.compatibility
    model_path = Path(model_path)
    if not verdict.usable:
        raise AdapterError(f"{candidate.label} does not fit {model_path.name}, so it was not downloaded: "
                           f"{verdict.reason}")
    folder = work_dir / "downloads" / candidate.repo_id.replace("/", "--")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = _fetch(hub, candidate, folder, progress, cancel)
        if progress is not None and candidate.kind == "peft":
            progress(DownloadProgress(candidate.size, candidate.size, f"Converting {candidate.name} for "
                                      f"{model_path.name}…"))
        return install_adapter(candidate, paths, library, model_path, work_dir=work_dir, name=name,
                               endpoint=hub.endpoint)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fetch(hub: Any, candidate: AdapterCandidate, folder: Path, progress: Callable[[DownloadProgress], None] | None,
           cancel: threading.Event | None) -> list[Path]:
    """Download the candidate's files into ``folder``, each checked against its size and SHA-256."""
    from huggingface_hub import hf_hub_download

    total, done, paths = candidate.size, 0, []
    for file in candidate.files:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"The download of {candidate.label} was cancelled; nothing was added.")
        if progress is not None:
            progress(DownloadProgress(done, total, f"Downloading {file.path}…"))
        try:
            local = Path(hf_hub_download(file.repo_id, file.path, revision=file.revision, local_dir=folder,
                                         endpoint=hub.endpoint, token=hub.token or False))
        except Exception as exc:  # huggingface_hub's errors and the network's
            raise HubError(f"{file.path} could not be downloaded from {file.repo_id}: {exc}") from exc
        _verify(local, file)
        paths.append(local)
        done += file.size
        if progress is not None:
            progress(DownloadProgress(done, total, f"Downloaded {file.path}."))
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"The download of {candidate.label} was cancelled; nothing was added.")
    return paths


def _verify(path: Path, file: Any) -> None:
    size = path.stat().st_size
    if file.size and size != file.size:
        raise AdapterError(f"{file.path} from {file.repo_id} arrived with {size:,} bytes instead of {file.size:,}; "
                           "it was deleted. Try again.")
    if file.sha256:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != file.sha256:
            raise AdapterError(f"{file.path} from {file.repo_id} does not match the SHA-256 the hub gives for it, "
                               "so it was deleted. Try again; if it keeps happening, the hub's copy is damaged.")
