"""A downloaded hub adapter joins the library: a GGUF adapter as it is, a PEFT adapter converted first.

The downloader has already checked every file's size and SHA-256. What arrives is moved, never
copied twice: the GGUF file into the library, the PEFT files into a scratch folder where the
converter makes the GGUF one. Either the adapter is in the library afterwards, or nothing is
(no half-converted file, no index entry, no leftover download), and a failure says why.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from desktop_app_lora.adapters import AdapterError

__all__ = ["install_adapter"]


def install_adapter(candidate: Any, paths: Sequence[Path], library: Any, model_path: Path, *,
                    work_dir: Path, name: str | None = None, endpoint: str = "") -> Any:
    """Add a downloaded adapter to ``library``; returns its entry.

    ``candidate`` is the :class:`~desktop_app_lora.hub_search.AdapterCandidate` that was
    downloaded and ``paths`` its files, in the order of ``candidate.files``. A PEFT adapter
    is converted for ``model_path`` in a scratch folder under ``work_dir``. The downloaded
    files are consumed (moved into the library or deleted) whether or not this succeeds.
    Raises AdapterError (ConversionError for a PEFT adapter) saying what went wrong.
    """
    from desktop_app_lora.convert import ConversionError, convert_peft_adapter

    name = (name or "").strip() or candidate.name
    where = f"{endpoint.rstrip('/')}/{candidate.repo_id}" if endpoint else candidate.repo_id
    source = f"downloaded from {where}" + (f" ({candidate.selector})" if candidate.selector else "")
    paths = [Path(p) for p in paths]
    if len(paths) != len(candidate.files):
        raise AdapterError(f"The download of {candidate.label} is incomplete: {len(paths)} of "
                           f"{len(candidate.files)} files arrived.")
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="parley-lora-hub-", dir=work_dir))
    try:
        if candidate.kind == "gguf":
            return library.add(paths[0], name=name, source=source, move=True)
        folder = scratch / "peft"
        folder.mkdir()
        # The converter reads a PEFT folder by its standard names, wherever the files came from.
        for path, file in zip(paths, candidate.files):
            shutil.move(str(path), str(folder / file.path.rsplit("/", 1)[-1]))
        out = scratch / "adapter.gguf"
        try:
            convert_peft_adapter(folder, out, model_path, name=name,
                                 extra_metadata={"source": f"{where} {candidate.selector}".strip()})
        except ConversionError as exc:
            raise ConversionError(f"{candidate.label} was downloaded, but it cannot be converted for "
                                  f"{Path(model_path).name}: {exc} Nothing was added.") from None
        return library.add(out, name=name, source=f"{source}, converted for {Path(model_path).name}", move=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for path in paths:
            if path.exists() and not path.is_dir():
                path.unlink(missing_ok=True)
