"""Find LoRA adapters on the model hub for the loaded model, each with a verdict before any download.

    found = find_adapters(hub, model_path)                    # by the model's name and base models
    found = find_adapters(hub, model_path, "owner/base-model")  # adapters of that base model too

Adapters are looked for three ways, one hub search each: repositories tagged as adapters of a
base model the loaded model names (the hub's ``base_model:adapter:REPO`` and ``base_model:REPO``
tags), and repositories whose name holds the query (the model's family name, e.g. ``smollm2``,
when none is given) tagged ``peft`` or ``lora``. In each repository, every GGUF file and every
folder with an ``adapter_config.json`` is a candidate, judged from small reads: the GGUF header,
or the config and the safetensors header, each by an HTTP Range request for the file's first
bytes (:mod:`desktop_app_lora.hub_adapters`). Weights are never fetched here.

Everything here does network I/O: run it on a worker thread. ``cancel`` stops between requests.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from desktop_app.api import GGUFHeader, HubError, HubFile, HubModelFile, ModelFileError, check_gguf_file
from desktop_app_lora.hub_adapters import (
    COMPATIBLE,
    INCOMPATIBLE,
    PROBABLY,
    UNKNOWN,
    Compatibility,
    gguf_compatibility,
    FIRST_READ,
    model_label,
    peft_compatibility,
    read_safetensors_head,
)

__all__ = ["AdapterCandidate", "SearchCancelled", "adapter_candidates", "base_repos", "find_adapters",
           "judge_candidate"]

log = logging.getLogger(__name__)

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
#: Candidates looked at per repository (a training run's checkpoints can make dozens).
PER_REPO = 4
#: Repositories looked at per search, and requests in flight at once.
REPOS = 20
WORKERS = 4
_ORDER = {COMPATIBLE: 0, PROBABLY: 1, UNKNOWN: 2, INCOMPATIBLE: 3}


class SearchCancelled(Exception):
    """The search was cancelled."""


@dataclass(frozen=True)
class AdapterCandidate:
    """One adapter in a hub repository: a GGUF file, or a PEFT folder (config + weights).

    ``files`` are what a download fetches: the GGUF file, or the PEFT folder's
    ``adapter_config.json`` and ``adapter_model.safetensors``. ``folder`` is the PEFT
    folder's path in the repository ("" for its top).
    """

    repo_id: str
    kind: str  # "gguf" or "peft"
    name: str
    files: tuple[HubFile, ...]
    compatibility: Compatibility
    folder: str = ""
    downloads: int = 0
    likes: int = 0
    license: str | None = None
    gated: str | bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        """Bytes a download fetches."""
        return sum(f.size for f in self.files)

    @property
    def label(self) -> str:
        """``owner/name`` plus the file or folder, as the user picks it (and `parley lora download` takes it)."""
        return f"{self.repo_id} {self.selector}".strip()

    @property
    def selector(self) -> str:
        """The file (GGUF) or folder (PEFT) inside the repository; "" for a PEFT adapter at its top."""
        return self.files[0].path if self.kind == "gguf" else self.folder

    def download(self, model_path: Path | str, name: str | None = None) -> HubModelFile:
        """What the download manager fetches, as one download (a PEFT adapter's two files together),
        remembering the model a PEFT adapter is converted for and the name it gets in the library."""
        from desktop_app_lora.hub_install import KIND

        return HubModelFile(repo_id=self.repo_id, name=self.name, parts=self.files, kind=KIND,
                            extra={"format": self.kind, "folder": self.folder, "for_model": str(model_path),
                                   "adapter_name": (name or "").strip() or self.name})


# -- where to look ---------------------------------------------------------------------------
def base_repos(model: GGUFHeader) -> list[str]:
    """Hub repositories the model's header says it is, or was made from (its base models)."""
    scalars = model.scalars
    found: list[str] = []
    count = int(scalars.get("general.base_model.count", 0) or 0)
    keys = ["general.repo_url", "general.source.repo_url",
            *(f"general.base_model.{i}.repo_url" for i in range(count))]
    for key in keys:
        repo = _repo_from_url(scalars.get(key))
        if repo:
            found.append(repo)
    for i in range(count):
        org, name = scalars.get(f"general.base_model.{i}.organization"), scalars.get(f"general.base_model.{i}.name")
        if org and name and " " not in f"{org}{name}":
            found.append(f"{org}/{name}")
    return list(dict.fromkeys(found))


def _repo_from_url(url: Any) -> str | None:
    if not url:
        return None
    match = re.match(r"^https?://[^/]+/(?:models/)?([\w.-]+/[\w.-]+)/?$", str(url).strip())
    return match[1] if match else None


_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _searches(model: GGUFHeader, query: str | None) -> list[tuple[str | None, tuple[str, ...]]]:
    """(name search, tags every result has) for each hub search to make, most specific first."""
    query = (query or "").strip()
    bases = base_repos(model)
    if _REPO_ID.match(query):
        bases.insert(0, query)
    searches: list[tuple[str | None, tuple[str, ...]]] = []
    for base in dict.fromkeys(bases):
        searches += [(None, (f"base_model:adapter:{base}",)), (None, (f"base_model:{base}",))]
    text = query if query and not _REPO_ID.match(query) else str(model.scalars.get("general.basename") or "")
    if text:
        searches += [(text, ("peft",)), (text, ("lora",))]
    return searches


# -- what a repository holds -------------------------------------------------------------------
def adapter_candidates(repo_id: str, files: Iterable[HubFile]) -> list[tuple[str, str, str, tuple[HubFile, ...]]]:
    """The adapters among a repository's files: ``(kind, name, folder, files)`` for each GGUF file
    and each folder holding an ``adapter_config.json``, at most PER_REPO of each kind.

    A PEFT folder without its safetensors weights is still listed (with the config alone), so
    the verdict can say why it cannot be used.
    """
    by_path = {f.path: f for f in files}
    short = repo_id.rsplit("/", 1)[-1]
    peft = []
    for path in sorted(by_path, key=lambda p: (p.count("/"), p)):
        if path == CONFIG or path.endswith("/" + CONFIG):
            folder = path[:-len(CONFIG)].rstrip("/")
            weights = by_path.get(f"{folder}/{WEIGHTS}" if folder else WEIGHTS)
            name = f"{short}-{folder.replace('/', '-')}" if folder else short
            peft.append(("peft", name, folder, (by_path[path],) + ((weights,) if weights else ())))
    gguf = [("gguf", Path(f.path).stem, "", (f,)) for f in sorted(by_path.values(), key=lambda f: (f.size, f.path))
            if f.path.lower().endswith(".gguf") and "mmproj" not in f.path.lower()]
    return peft[:PER_REPO] + gguf[:PER_REPO]


# -- judging one candidate -----------------------------------------------------------------------
def judge_candidate(hub: Any, kind: str, name: str, files: tuple[HubFile, ...], model: GGUFHeader, model_name: str,
                    base_model: str | None) -> Compatibility | None:
    """The verdict for one candidate from its metadata (small Range reads only).

    None for a GGUF file that turns out to be a model, not an adapter (not worth listing).
    A failure to read is an UNKNOWN verdict saying why, not an error.
    """
    from desktop_app_lora.safetensors_file import SafetensorsError

    adapter_name = f"{files[0].repo_id}/{name}" if kind == "peft" else files[0].path.rsplit("/", 1)[-1]
    try:
        if kind == "gguf":
            header = hub.read_header(files[0], first_bytes=FIRST_READ)
            if header.scalars.get("general.type", "model") == "model" and "adapter.type" not in header.scalars:
                return None
            return gguf_compatibility(header, model, adapter_name=adapter_name, model_name=model_name,
                                      base_model=base_model)
        config = hub.read_range(files[0], 0, files[0].size) if files[0].size else b""
        tensors = None
        weights = files[1] if len(files) > 1 else None
        if weights is not None:
            tensors = read_safetensors_head(lambda start, end: hub.read_range(weights, start, end), weights.size,
                                            weights.path.rsplit("/", 1)[-1])
        elif config:
            # Without the weights there is nothing to convert; the converter's words say so.
            return Compatibility(INCOMPATIBLE, f"{adapter_name} has no {WEIGHTS}: Parley converts safetensors "
                                 "weights only (not adapter_model.bin, which is pickled PyTorch).", base_model)
        return peft_compatibility(config, tensors, model, adapter_name=adapter_name, model_name=model_name,
                                  base_model=base_model, weights_size=weights.size if weights else 0)
    except (ModelFileError, SafetensorsError) as exc:
        return Compatibility(INCOMPATIBLE, str(exc), base_model)
    except HubError as exc:
        return Compatibility(UNKNOWN, f"Its metadata could not be read: {exc}", base_model)


# -- the search -----------------------------------------------------------------------------------
def find_adapters(hub: Any, model_path: Path | str, query: str | None = None, *, limit: int = REPOS,
                  progress: Callable[[str], None] | None = None,
                  cancel: threading.Event | None = None) -> list[AdapterCandidate]:
    """LoRA adapters on ``hub`` for the model at ``model_path``, best verdicts first.

    ``query``: words in the repositories' names, or a base model's ``owner/name`` (its adapters
    are found by the hub's tags); None searches by the model's family name and the base models
    its header names. ``progress(text)`` hears what is being looked at. Raises HubError when
    the hub cannot be searched at all, SearchCancelled when ``cancel`` is set.
    """
    model = check_gguf_file(model_path)
    model_name = model_label(model, Path(model_path).name)
    searches = _searches(model, query)
    if not searches:
        raise HubError("The loaded model does not say its name; search for adapters by name, "
                       "e.g. `parley lora search llama`.")
    say = progress or (lambda _text: None)

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise SearchCancelled("The search was cancelled.")

    repos: dict[str, Any] = {}
    failures: list[HubError] = []
    said = set()
    for text, tags in searches:
        check()
        what = text or tags[0].rsplit(":", 1)[-1]
        if what not in said:
            said.add(what)
            say(f"Searching {hub.endpoint} for adapters of {what}…")
        try:
            for summary in hub.find_repos(text, tags, limit=limit):
                repos.setdefault(summary.repo_id, summary)
        except HubError as exc:
            failures.append(exc)
        if len(repos) >= limit:
            break
    if failures and not repos:
        raise failures[0]
    chosen = list(repos.values())[:limit]

    def look(summary: Any) -> list[AdapterCandidate]:
        check()
        try:
            details = hub.details(summary.repo_id)
        except HubError as exc:
            log.info("adapter search: %s left out: %s", summary.repo_id, exc)
            return []
        base = _adapter_base(details)
        found = []
        for kind, name, folder, files in adapter_candidates(details.repo_id, details.files):
            check()
            say(f"Checking {details.repo_id} {files[0].path if kind == 'gguf' else folder}".strip() + "…")
            verdict = judge_candidate(hub, kind, name, files, model, model_name, base)
            if verdict is None:
                continue
            found.append(AdapterCandidate(
                repo_id=details.repo_id, kind=kind, name=name, files=files, compatibility=verdict, folder=folder,
                downloads=details.downloads, likes=details.likes, license=details.license, gated=details.gated))
        return found

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="lora-hub") as pool:
        results = [c for batch in pool.map(look, chosen) for c in batch]
    check()
    return sorted(results, key=lambda c: (_ORDER.get(c.compatibility.verdict, 9), -c.downloads, c.label))


def _adapter_base(details: Any) -> str | None:
    """The base model the hub says a repository's adapters are for (``base_model:adapter:`` first)."""
    for tag in details.tags:
        if tag.startswith("base_model:adapter:"):
            return tag.split(":", 2)[2]
    return details.base_model
