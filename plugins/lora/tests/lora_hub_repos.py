"""Adapter repositories on the hub mirror (tests/hub_mirror.py), for the LoRA hub tests.

- FRENCH: a PEFT adapter at the repository's top, made for SmolLM2's shapes, tagged as an
  adapter of SmolLM2-135M-Instruct (the hub's ``base_model:adapter:`` tag);
- PIRATE: a GGUF LoRA adapter with SmolLM2's shapes, saying nothing of its base model;
- BIG: a PEFT adapter for a bigger model (embedding size 960): refused before any download;
- TAGGED: a PEFT adapter in a subfolder whose name says nothing, found only by its base-model tag;
- QUANTS: a GGUF model repository named after SmolLM2 (not an adapter; never offered).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

from lora_test_files import ATTENTION, make_adapter_gguf, make_peft
from tests.hub_mirror import Faults, HubMirror, MirrorRepo

SMOL_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
FRENCH = "alice/smollm2-135m-french-lora"
PIRATE = "bob/smollm2-pirate-lora-gguf"
PIRATE_FILE = "smollm2-pirate-f32.gguf"
BIG = "carol/smollm2-360m-lora"
TAGGED = "dave/answers-in-verse"
TAGGED_FOLDER = "checkpoint-200"
QUANTS = "erin/SmolLM2-135M-GGUF"

#: Square tensors of SmolLM2 (make_adapter_gguf gives every kind one output width).
SQUARE = ("attn_q", "attn_output")


@functools.lru_cache(maxsize=1)
def _files(folder: str) -> dict[str, dict[str, bytes]]:
    """Each repository's files as bytes, made once per test run."""
    root = Path(folder)
    french = make_peft(root / "french", rank=4, alpha=8, modules=ATTENTION, seed=1)
    big = make_peft(root / "big", rank=16, layers=32, modules=ATTENTION,
                    shapes={"n_embd": 960, "n_kv": 320, "n_ff": 2560},
                    config={"base_model_name_or_path": "HuggingFaceTB/SmolLM2-360M-Instruct"})
    verse = make_peft(root / "verse", rank=2, alpha=4, modules=("q_proj", "v_proj"), layers=30, seed=2,
                      config={"base_model_name_or_path": SMOL_BASE})
    pirate = make_adapter_gguf(root / PIRATE_FILE, layers=30, kinds=SQUARE, rank=4)

    def read(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    return {"french": read(french), "big": read(big), "verse": read(verse), "pirate": {PIRATE_FILE: pirate.read_bytes()}}


def adapter_mirror(folder: Path) -> HubMirror:
    """A mirror with the adapter repositories (files made in ``folder`` the first time)."""
    from desktop_app.core.models import default_model_path

    files = _files(str(folder))
    card = "---\nlicense: apache-2.0\n---\n\nA LoRA adapter.\n"
    mirror = HubMirror()
    mirror.add_repo(MirrorRepo(FRENCH, files=dict(files["french"]), card=card, downloads=300, library_name="peft",
                               tags=["peft", "safetensors", "lora", f"base_model:adapter:{SMOL_BASE}"]))
    mirror.add_repo(MirrorRepo(PIRATE, files=dict(files["pirate"]), card=card, downloads=200,
                               tags=["gguf", "lora"]))
    mirror.add_repo(MirrorRepo(BIG, files=dict(files["big"]), card=card, downloads=900, library_name="peft",
                               tags=["peft", "lora", "base_model:adapter:HuggingFaceTB/SmolLM2-360M-Instruct"]))
    mirror.add_repo(MirrorRepo(TAGGED, files={f"{TAGGED_FOLDER}/{k}": v for k, v in files["verse"].items()},
                               card=card, downloads=50, library_name="peft",
                               tags=["peft", f"base_model:adapter:{SMOL_BASE}"]))
    mirror.add_repo(MirrorRepo(QUANTS, files={"SmolLM2-135M-Q4_1.gguf": default_model_path()}, downloads=5000,
                               tags=["gguf"]))
    return mirror


def reset(mirror: HubMirror) -> HubMirror:
    """Forget the requests and faults of the previous test."""
    mirror.requests.clear()
    mirror.faults = Faults()
    return mirror


@contextlib.contextmanager
def served_adapters(folder: Path, port: int | None = None) -> Iterator[tuple[HubMirror, str]]:
    """The adapter mirror, serving on loopback (on ``port``, else a free one): ``(mirror, url)``."""
    mirror = adapter_mirror(folder)
    with mirror.serve(port=port) as url:
        yield mirror, url
