"""The repositories the catalogue's tests find on the hub mirror (see tests/hub_mirror.py).

The main one holds the real SmolLM2 file (served from its path) and around it the shapes GGUF
repositories take: a smaller quantisation, a model split in two parts, one with a part
missing, a vision projector and a model card. The small files are the real file's header and
nothing after it, so any of them gives the model's true header by a Range request.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from tests.hub_mirror import Faults, HubMirror, MirrorRepo

SMOL = "bartowski/SmolLM2-135M-Instruct-GGUF"
SMOL_360 = "bartowski/SmolLM2-360M-Instruct-GGUF"
SAFETENSORS = "HuggingFaceTB/SmolLM2-135M-Instruct"
GATED = "meta-llama/Llama-3.2-1B-Instruct-GGUF"
PRIVATE = "someone/private-GGUF"
GATED_TOKEN = "hf_gated_secret"

SMOL_CARD = """---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
tags:
- gguf
---

# SmolLM2 135M Instruct GGUF

[![Discord](https://img.shields.io/badge/discord-join-blue.svg)](https://discord.gg/x)

<img src="logo.png" width="200">

SmolLM2 is a family of **compact** language models in three sizes. They are capable of solving a wide
range of tasks while being light enough to run [on-device](https://example.org/on-device).

| Quant | Size |
| ----- | ---- |
| Q4_1  | 98 MB |

```sh
llama-cli -m SmolLM2-135M-Instruct-Q4_1.gguf
```
"""

GATED_CARD = """---
license: llama3.2
extra_gated_prompt: You agree to the Llama 3.2 Community License and its Acceptable Use Policy.
---

Llama 3.2 1B Instruct, quantised to GGUF.
"""


@functools.lru_cache(maxsize=1)
def header_only() -> bytes:
    """The real model's bytes up to where its tensor data begins: a valid header, no weights."""
    from desktop_app.core.models import check_gguf_file, default_model_path

    path = default_model_path()
    header = check_gguf_file(path)
    with path.open("rb") as f:
        return f.read(header.data_end - header.tensor_bytes)


def catalogue_mirror() -> HubMirror:
    """A mirror with the catalogue's repositories."""
    from desktop_app.core.models import default_model_path

    real = default_model_path()
    small = header_only()
    mirror = HubMirror()
    mirror.add_repo(MirrorRepo(SMOL, files={
        "SmolLM2-135M-Instruct-Q4_1.gguf": real,
        "SmolLM2-135M-Instruct-IQ2_XXS.gguf": small,
        # Listed out of order on purpose: the parts must come back in order.
        "SmolLM2-135M-Instruct-Q8_0-00002-of-00002.gguf": real,
        "SmolLM2-135M-Instruct-Q8_0-00001-of-00002.gguf": real,
        "SmolLM2-135M-Instruct-Q6_K-00001-of-00003.gguf": small,
        "SmolLM2-135M-Instruct-Q6_K-00003-of-00003.gguf": small,
        "mmproj-SmolLM2-135M-f16.gguf": small,
        "config.json": b"{}",
    }, card=SMOL_CARD, downloads=5_000, likes=42))
    mirror.add_repo(MirrorRepo(SMOL_360, files={"SmolLM2-360M-Instruct-Q8_0.gguf": small},
                               license="apache-2.0", downloads=9_000, likes=7))
    mirror.add_repo(MirrorRepo(SAFETENSORS, files={"model.safetensors": b"\0" * 64}, tags=["transformers"],
                               library_name="transformers", downloads=90_000))
    mirror.add_repo(MirrorRepo(GATED, files={"Llama-3.2-1B-Instruct-Q4_K_M.gguf": small}, card=GATED_CARD,
                               gated="manual", token=GATED_TOKEN, downloads=3_000))
    mirror.add_repo(MirrorRepo(PRIVATE, files={"private-Q4_0.gguf": small}, token="hf_private", downloads=1))
    return mirror


@contextlib.contextmanager
def served_catalogue() -> Iterator[tuple[HubMirror, str]]:
    """The catalogue mirror, running: ``(mirror, url)``."""
    mirror = catalogue_mirror()
    with mirror.serve() as url:
        yield mirror, url


def reset(mirror: HubMirror) -> HubMirror:
    """Clear what one test did to a shared mirror: its faults and the requests it saw."""
    mirror.faults = Faults()
    mirror.requests.clear()
    return mirror
