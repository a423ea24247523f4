"""A downloaded hub adapter joins the library: a GGUF adapter as it is, a PEFT adapter converted first.

The app's download manager fetches the files and checks every size and SHA-256; then it hands
them to :func:`install_adapter` (the plugin's installer for the download kind ``"adapter"``).
What arrives is moved, never copied twice: the GGUF file into the library, the PEFT files into
a scratch folder where the converter makes the GGUF one. Either the adapter is in the library
afterwards, or nothing is (no half-converted file, no index entry, no leftover), and a failure
says why.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from desktop_app_lora.adapters import AdapterError

__all__ = ["KIND", "describe", "install_adapter", "make_installer"]

#: The download kind the plugin installs (``HubModelFile.kind``).
KIND = "adapter"


def describe(model: Any) -> str:
    """``owner/name`` plus the GGUF file or PEFT folder a download is of."""
    if model.extra.get("format") == "gguf":
        return f"{model.repo_id} {model.first.path}"
    folder = model.extra.get("folder") or ""
    return f"{model.repo_id} {folder}".strip()


def install_adapter(model: Any, paths: Sequence[Path], library: Any, model_path: Path | str, *,
                    work_dir: Path, endpoint: str = "") -> Any:
    """Add a downloaded adapter to ``library``; returns its entry.

    ``model`` is the download (a :class:`desktop_app.api.HubModelFile` made by
    :meth:`~desktop_app_lora.hub_search.AdapterCandidate.download`) and ``paths`` its files, in
    the order of its parts. A PEFT adapter is converted for ``model_path`` in a scratch folder
    under ``work_dir``. The files are consumed (moved into the library or deleted) whether or
    not this succeeds. Raises AdapterError (ConversionError for a PEFT adapter) saying why.
    """
    from desktop_app_lora.convert import ConversionError, convert_peft_adapter

    name = str(model.extra.get("adapter_name") or "").strip() or model.name
    label = describe(model)
    where = f"{endpoint.rstrip('/')}/{model.repo_id}" if endpoint else model.repo_id
    selector = label[len(model.repo_id):].strip()
    source = f"downloaded from {where}" + (f" ({selector})" if selector else "")
    paths = [Path(p) for p in paths]
    try:
        if len(paths) != len(model.parts):
            raise AdapterError(f"The download of {label} is incomplete: {len(paths)} of {len(model.parts)} "
                               "files arrived.")
        if model.extra.get("format") == "gguf":
            return library.add(paths[0], name=name, source=source, move=True)
        model_path = Path(model_path)
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="parley-lora-hub-", dir=work_dir) as scratch:
            folder = Path(scratch) / "peft"
            folder.mkdir()
            # The converter reads a PEFT folder by its standard names, wherever the files came from.
            for path, file in zip(paths, model.parts):
                shutil.move(str(path), str(folder / file.path.rsplit("/", 1)[-1]))
            out = Path(scratch) / "adapter.gguf"
            try:
                convert_peft_adapter(folder, out, model_path, name=name, extra_metadata={"source": f"{where} {selector}".strip()})
            except ConversionError as exc:
                raise ConversionError(f"{label} was downloaded, but it cannot be converted for {model_path.name}: "
                                      f"{exc} Nothing was added.") from None
            return library.add(out, name=name, source=f"{source}, converted for {model_path.name}", move=True)
    finally:
        for path in paths:
            if path.is_file():
                path.unlink(missing_ok=True)


def make_installer(library: Any, work_dir: Path, loaded_model: Any = None) -> Any:
    """The download manager's installer for :data:`KIND`: ``install(model, files, origin) -> (name, path)``.

    A PEFT adapter is converted for the model its download names (``extra["for_model"]``), or,
    when that file is gone, for ``loaded_model()`` (the model loaded now).
    """

    def install(model: Any, files: list[Path], origin: dict[str, Any]) -> tuple[str, Path]:
        target = Path(str(model.extra.get("for_model") or ""))
        if model.extra.get("format") != "gguf" and not target.is_file():
            target = loaded_model() if loaded_model is not None else None
            if target is None:
                raise AdapterError(f"{describe(model)} is downloaded, but the model it was to be converted for "
                                   "is gone; load a model and download it again.")
        entry = install_adapter(model, files, library, target, work_dir=work_dir,
                                endpoint=str(origin.get("endpoint") or ""))
        return entry.name, library.path(entry)

    return install
