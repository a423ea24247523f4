"""Will a model from the hub fit this machine? A verdict before anything is downloaded.

The weights are the model's files (all parts); the KV cache, the compute and output buffers
come from :func:`desktop_app.core.memory_fit.estimate_memory` on the GGUF header, which
:meth:`desktop_app.core.hub.Hub.read_header` fetches with a Range request. The quantisations
of one repository share their architecture, so one header serves them all.

The levels follow :func:`~desktop_app.core.memory_fit.choose_context_length`'s margins:

- "fits": the estimate, plus its tolerance, fits in what is free minus the reserve kept for
  the rest of the system;
- "tight": it fits only without that margin (it may load, and may make the machine swap);
- "too large": it does not fit at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from desktop_app.core.hub_files import HubModelFile
from desktop_app.core.memory_fit import ESTIMATE_TOLERANCE, RESERVE_BYTES, MemoryEstimate, estimate_memory
from desktop_app.core.models import GGUFHeader

__all__ = ["FIT_LEVELS", "FitVerdict", "RepoFit", "fit_verdict", "format_bytes", "repo_fit"]

#: The verdicts, best first.
FIT_LEVELS = ("fits", "tight", "too large")


@dataclass(frozen=True)
class FitVerdict:
    """How a model would fit: ``level`` is one of :data:`FIT_LEVELS`; sizes in bytes.

    ``needed`` counts the weights and, when the header was known, the context's buffers
    (``estimate`` then holds them, with the weights as the header counts them); ``available``
    is the RAM, plus the VRAM when given, free now. ``text`` says it with the numbers, e.g.
    "fits: needs about 290 MB at 4,096 tokens of context, of 20.1 GB free".
    """

    level: str
    needed: int
    available: int
    text: str
    estimate: MemoryEstimate | None = None


def fit_verdict(
    model: HubModelFile,
    header: GGUFHeader | None,
    *,
    available_ram: int,
    available_vram: int | None = None,
    context_length: int = 4096,
    batch_size: int = 512,
    kv_type: str = "f16",
    flash_attention: bool = True,
) -> FitVerdict:
    """Whether ``model`` fits in ``available_ram`` (+ ``available_vram``) bytes at ``context_length``.

    ``header`` is any GGUF header of the model's repository (None when it could not be read:
    then only the weights are counted, and the text says so). With a GPU the weights and the
    cache can be split between the two memories, so their sum is the budget.
    """
    estimate = None
    needed = model.size
    if header is not None:
        estimate = estimate_memory(header, context_length, batch_size=batch_size, kv_type=kv_type,
                                   flash_attention=flash_attention)
        # The file's size stands for the weights: the header may be another quantisation's.
        needed += estimate.kv_cache + estimate.compute + estimate.output
    available = available_ram + (available_vram or 0)
    if needed * (1 + ESTIMATE_TOLERANCE) <= available - RESERVE_BYTES:
        level = "fits"
    elif needed <= available:
        level = "tight"
    else:
        level = "too large"

    where = f"{format_bytes(available)} free"
    if available_vram is not None:
        where += f" ({format_bytes(available_ram)} RAM + {format_bytes(available_vram)} VRAM)"
    what = f"{format_bytes(needed)} at {context_length:,} tokens of context" if header is not None \
        else f"{format_bytes(needed)} for the weights alone (the context's memory could not be estimated)"
    if level == "fits":
        text = f"fits: needs about {what}, of {where}"
    elif level == "tight":
        text = (f"tight: needs about {what}, of {where}, leaving less than the "
                f"{format_bytes(RESERVE_BYTES)} kept for the rest of the system")
    else:
        text = f"too large: needs about {what}, but only {where}"
    return FitVerdict(level, needed, available, text, estimate)


@dataclass(frozen=True)
class RepoFit:
    """The verdicts for every model of one repository, by model name. ``note`` says why only the
    weights were counted, when the repository's header could not be read."""

    verdicts: dict[str, FitVerdict] = field(default_factory=dict)
    note: str | None = None


def repo_fit(hub: Any, details: Any, *, available_ram: int, available_vram: int | None = None,
             context_length: int = 4096) -> RepoFit:
    """Read one GGUF header of ``details``' repository (the smallest files first; one serves
    every quantisation) and give each of its models a verdict. Network: run it off the GUI thread."""
    from desktop_app.core.errors import ModelFileError
    from desktop_app.core.hub_errors import HubGatedError, HubTokenError

    header, note = None, None
    for model in details.models[:3]:
        try:
            header = hub.read_header(model)
            break
        except (HubGatedError, HubTokenError) as exc:
            note = ("the repository is gated: accept its licence and add your access token"
                    if isinstance(exc, HubGatedError) and details.gated else str(exc))
            break
        except ModelFileError as exc:
            note = str(exc)
    verdicts = {model.name: fit_verdict(model, header, available_ram=available_ram, available_vram=available_vram,
                                        context_length=context_length) for model in details.models}
    return RepoFit(verdicts, note if header is None else None)


def format_bytes(size: int) -> str:
    """A size for people, in decimal units: "98 MB", "1.2 GB"."""
    if size >= 1e9:
        return f"{size / 1e9:,.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:,.0f} MB"
    if size >= 1e3:
        return f"{size / 1e3:,.0f} kB"
    return f"{size} bytes"
