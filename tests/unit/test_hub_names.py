"""Which models a hub repository's file list makes up: quantisation names, split parts, projectors; the card's gist."""

import pytest

from desktop_app.core.hub_files import HubFile
from desktop_app.core.hub_models import group_gguf_files, quantization_of
from desktop_app.core.model_card import card_summary

REPO = "owner/Model-GGUF"


def files(**sizes: int) -> list[HubFile]:
    return [HubFile(REPO, path, size, sha256=f"{i:064x}") for i, (path, size) in enumerate(sizes.items())]


@pytest.mark.parametrize("name, quant", [
    ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("model.Q8_0.gguf", "Q8_0"),
    ("Llama-3.2-1B-Instruct-IQ2_XXS.gguf", "IQ2_XXS"),
    ("qwen2.5-0.5b-instruct-fp16.gguf", "F16"),
    ("gemma-2b-it.BF16.gguf", "BF16"),
    ("phi-3-mini-Q4_0_4_4.gguf", "Q4_0_4_4"),
    ("Qwen3-8B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
    ("Mistral-7B.i1-IQ3_M.gguf", "IQ3_M"),
    ("x-IQ4_NL.gguf", "IQ4_NL"),
    ("x-Q3_K_S.gguf", "Q3_K_S"),
    ("x-q6_k.gguf", "Q6_K"),
    ("BitNet-TQ1_0.gguf", "TQ1_0"),
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
    ("Q8_0/DeepSeek-00001-of-00004.gguf", "Q8_0"),  # named by its folder
    ("Qwen2.5-0.5B-Instruct.gguf", None),  # "Qwen2" and "0.5B" are not quantisations
    ("tinyllama-q4.gguf", None),
])
def test_the_quantisation_is_read_from_the_file_name(name, quant):
    assert quantization_of(name) == quant


def test_split_parts_become_one_model_with_its_parts_in_order():
    listed = files(**{
        "M-Q8_0-00003-of-00003.gguf": 30, "M-Q8_0-00001-of-00003.gguf": 10, "M-Q8_0-00002-of-00003.gguf": 20,
        "M-Q4_K_M.gguf": 25,
    })
    grouped = group_gguf_files(listed)
    assert [m.name for m in grouped.models] == ["Q4_K_M", "Q8_0"]  # smallest first: 25 < 60
    q8 = grouped.models[1]
    assert [p.path for p in q8.parts] == [f"M-Q8_0-0000{n}-of-00003.gguf" for n in (1, 2, 3)]
    assert q8.size == 60 and q8.first.path.endswith("00001-of-00003.gguf")
    assert q8.quantization == "Q8_0" and q8.extra["part_count"] == 3
    assert grouped.incomplete == ()


def test_a_split_model_with_a_part_missing_is_not_offered():
    grouped = group_gguf_files(files(**{"M-Q6_K-00001-of-00003.gguf": 10, "M-Q6_K-00003-of-00003.gguf": 10,
                                        "M-Q2_K.gguf": 5}))
    assert [m.name for m in grouped.models] == ["Q2_K"]
    [broken] = grouped.incomplete
    assert broken.name == "Q6_K" and broken.extra["missing_parts"] == (2,) and broken.extra["part_count"] == 3


def test_projectors_and_other_files_are_kept_out_of_the_models():
    grouped = group_gguf_files(files(**{"mmproj-model-f16.gguf": 7, "README.md": 1, "config.json": 1,
                                        "model.safetensors": 99, "model-F16.gguf": 50}))
    assert [m.name for m in grouped.models] == ["F16"]
    assert [f.path for f in grouped.projectors] == ["mmproj-model-f16.gguf"]


def test_two_files_of_one_quantisation_are_named_by_file():
    grouped = group_gguf_files(files(**{"Model-A-Q4_K_M.gguf": 10, "Model-B-Q4_K_M.gguf": 11, "Model-A-Q8_0.gguf": 20}))
    assert [m.name for m in grouped.models] == ["Model-A-Q4_K_M", "Model-B-Q4_K_M", "Q8_0"]
    assert all(m.quantization for m in grouped.models)


CARD = """---
license: apache-2.0
tags: [gguf]
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


def test_the_card_summary_is_the_first_prose_without_front_matter_or_markdown():
    summary = card_summary(CARD)
    assert summary.startswith("SmolLM2 is a family of compact language models in three sizes.")
    assert "on-device" in summary  # a link keeps its words
    for noise in ("license:", "---", "#", "**", "Discord", "<img", "|", "llama-cli", "https://"):
        assert noise not in summary


def test_the_card_summary_is_bounded_and_empty_without_prose():
    long = "---\nlicense: mit\n---\n" + "\n\n".join("word " * 200 for _ in range(3))
    summary = card_summary(long, max_chars=300)
    assert len(summary) <= 300 and summary.endswith("…")
    assert card_summary("---\nlicense: mit\n---\n# Only a title\n\n![img](x.png)\n") == ""
