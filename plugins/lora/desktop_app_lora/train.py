"""Train a LoRA adapter on the loaded GGUF model, then turn it into a GGUF adapter.

The base weights come from the model's own GGUF file, dequantised by transformers' GGUF
loader, so the adapter learns against exactly the weights llama.cpp will run it on. peft adds
the LoRA layers; a short, plain training loop (AdamW, cosine decay, gradient clipping, loss
on the assistant's words only) keeps every step visible: each one reports its loss, and a
cancel request is honoured between steps. The GPU is used when torch has one.

torch, transformers and peft are imported inside the functions that need them: importing
this module costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from desktop_app.api import ModelFileError, ParleyError, check_gguf_file
from desktop_app_lora.convert import MODULES, convert_peft_adapter
from desktop_app_lora.data import Chat

__all__ = [
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingCancelled",
    "TrainingError",
    "train_adapter",
    "train_metadata",
    "train_peft",
]

IGNORE = -100  # label of tokens the loss leaves out
#: Automatic epochs give small data sets at least this many optimiser steps (measured: a fact
#: taught by six examples is learned after about a dozen steps at the default learning rate).
MIN_STEPS = 16


class TrainingError(ParleyError):
    """Training cannot start or failed; the message says why."""


class TrainingCancelled(ParleyError):
    """Training was cancelled; nothing was added."""


@dataclass
class TrainConfig:
    """How to train. The defaults suit a handful to a few hundred short examples."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-3
    #: Passes over the examples; 0 = automatic (see :meth:`epochs_for`).
    epochs: int = 0
    batch_size: int = 4
    max_length: int = 512
    dropout: float = 0.0
    seed: int = 0

    def epochs_for(self, examples: int) -> int:
        """The passes to make over ``examples`` examples.

        Automatic: at least MIN_STEPS optimiser steps and at least 3 passes. A handful of
        examples then gets many passes (one example: 16), a large set three.
        """
        if self.epochs:
            return self.epochs
        per_epoch = math.ceil(max(1, examples) / self.batch_size)
        return min(100, max(3, math.ceil(MIN_STEPS / per_epoch)))

    def validate(self) -> None:
        """Raise TrainingError for values training cannot use."""
        if not 1 <= self.rank <= 256:
            raise TrainingError("The rank must be between 1 and 256 (8 suits small data).")
        if not 0 < self.alpha <= 1024:
            raise TrainingError("Alpha must be above 0 (twice the rank is usual).")
        if not 0 < self.learning_rate <= 0.1:
            raise TrainingError("The learning rate must be above 0 and at most 0.1 (try 0.001).")
        if not 0 <= self.epochs <= 1000:
            raise TrainingError("Epochs must be between 0 (automatic) and 1000.")
        if not 1 <= self.batch_size <= 256:
            raise TrainingError("The batch size must be between 1 and 256.")
        if not 16 <= self.max_length <= 32768:
            raise TrainingError("The maximum length must be between 16 and 32768 tokens.")
        if not 0 <= self.dropout < 1:
            raise TrainingError("Dropout must be at least 0 and below 1.")
        unknown = [m for m in self.target_modules if m not in MODULES]
        if unknown or not self.target_modules:
            raise TrainingError(f"Unknown target module(s) {', '.join(unknown) or '(none given)'}; "
                                f"choose from {', '.join(MODULES)}.")


@dataclass
class TrainProgress:
    """Where training is. ``stage``: loading, training, converting. ``loss`` is the last step's."""

    stage: str
    message: str
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float | None = None
    elapsed: float = 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left, estimated from the steps so far."""
        if self.stage != "training" or not self.step or not self.total_steps:
            return None
        return self.elapsed / self.step * (self.total_steps - self.step)


@dataclass
class TrainResult:
    """What training produced: the PEFT folder, and how it went."""

    peft_dir: Path
    examples: int
    steps: int
    final_loss: float
    seconds: float
    device: str
    epochs: int = 0
    losses: list[float] = field(default_factory=list)


def _torch() -> Any:
    """Import torch, asking its OpenMP threads to sleep rather than spin while they wait.

    With the default (spinning) policy every step stalls whenever another program holds a
    core: measured on two cores with one busy, 25-75 s a step instead of 1-3 s. Sleeping
    waiters cost next to nothing when the cores are free. OpenMP reads the setting once,
    when torch is first imported; a user's own OMP_WAIT_POLICY is kept.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def pick_device() -> str:
    """"cuda" or "mps" when torch can use one, else "cpu"."""
    torch = _torch()

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def train_peft(
    model_path: Path | str,
    chats: list[Chat],
    out_dir: Path | str,
    config: TrainConfig | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train a LoRA adapter for the GGUF model ``model_path`` on ``chats``; save it in PEFT form.

    Blocks for the whole run: call it on a worker thread. ``progress`` receives a
    :class:`TrainProgress` at every stage and step; setting ``cancel`` stops before the next
    step with :class:`TrainingCancelled`.
    """
    config = config or TrainConfig()
    config.validate()
    model_path, out_dir = Path(model_path), Path(out_dir)
    cancel = cancel or threading.Event()
    report = progress or (lambda p: None)
    started = time.perf_counter()
    if not chats:
        raise TrainingError("There are no examples to learn from.")
    header = _check_base(model_path)

    def check_cancel() -> None:
        if cancel.is_set():
            raise TrainingCancelled("Training was cancelled; nothing was added.")

    report(TrainProgress("loading", f"Reading {model_path.name}…", elapsed=time.perf_counter() - started))
    tokenizer, model, device = _load_base(model_path, check_cancel)
    try:
        add_bos = bool(header.scalars.get("tokenizer.ggml.add_bos_token", False))
        encoded = [_encode(tokenizer, chat, config.max_length, add_bos) for chat in chats]
        usable = [e for e in encoded if any(label != IGNORE for label in e[1])]
        if not usable:
            raise TrainingError(f"Every example is longer than the maximum length ({config.max_length} tokens) "
                                "before its answer starts; raise the maximum length or shorten the examples.")
        check_cancel()
        model = _add_lora(model, config)
        result = _run(model, tokenizer, usable, config, device, report, check_cancel, started)
        check_cancel()
        report(TrainProgress("converting", "Saving the adapter…", result.steps, result.steps,
                             result.epochs, result.final_loss, time.perf_counter() - started))
        out_dir.mkdir(parents=True, exist_ok=True)
        # The model's file name, as the user knows it (general.name is often a training run's name).
        model.peft_config["default"].base_model_name_or_path = model_path.stem
        # Embeddings are never trained; saying so keeps peft from asking the Hugging Face Hub
        # whether the base model's vocabulary changed (Parley works offline).
        model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
        result.peft_dir = out_dir
        result.examples = len(usable)
        result.seconds = time.perf_counter() - started
        return result
    finally:
        del model
        gc.collect()


def train_adapter(
    model_path: Path | str,
    chats: list[Chat],
    library: Any,
    name: str,
    config: TrainConfig | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
    work_dir: Path | None = None,
    source: str = "",
) -> tuple[Any, TrainResult]:
    """Train (see :func:`train_peft`), convert to GGUF and add the adapter to ``library``.

    Returns (the library entry, the training result). Nothing is added when training fails
    or is cancelled; the temporary files are removed either way.
    """
    config = config or TrainConfig()
    report = progress or (lambda p: None)
    if not name.strip():
        raise TrainingError("Give the adapter a name.")
    work = Path(tempfile.mkdtemp(prefix="parley-lora-", dir=work_dir))
    try:
        result = train_peft(model_path, chats, work / "peft", config, progress=progress, cancel=cancel)
        report(TrainProgress("converting", "Converting to GGUF…", result.steps, result.steps, result.epochs,
                             result.final_loss, result.seconds))
        gguf_path = work / "adapter.gguf"
        convert_peft_adapter(result.peft_dir, gguf_path, model_path, name=name,
                             extra_metadata=train_metadata(result, config))
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("Training was cancelled; nothing was added.")
        entry = library.add(gguf_path, name=name, move=True,
                            source=source or f"trained in Parley on {result.examples} examples")
        return entry, result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_metadata(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    """How an adapter was trained, for its GGUF file (keys under ``parley.training.``)."""
    return {
        "training.examples": result.examples, "training.steps": result.steps,
        "training.final_loss": float(result.final_loss), "training.epochs": result.epochs,
        "training.learning_rate": float(config.learning_rate), "training.rank": config.rank,
        "training.target_modules": ",".join(config.target_modules),
    }


# -- the pieces -----------------------------------------------------------------------------
def _check_base(model_path: Path) -> Any:
    try:
        header = check_gguf_file(model_path)
    except ModelFileError as exc:
        raise TrainingError(f"The base model cannot be read: {exc}") from None
    # Training holds the dequantised weights (4 bytes each) and about as much again for
    # activations and gradients; refuse early rather than let the system run out of memory.
    needed = header.parameter_count * 4 * 2
    available = _available_memory()
    if available is not None and needed > available:
        raise TrainingError(
            f"Training on {model_path.name} needs about {needed / 1e9:.1f} GB of memory and "
            f"{available / 1e9:.1f} GB are free. Train on a smaller model, or close other programs."
        )
    return header


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _load_base(model_path: Path, check_cancel: Callable[[], None]) -> tuple[Any, Any, str]:
    try:
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise TrainingError(f"Training needs torch, transformers and peft ({exc}). Install Parley with pip "
                            "to get them; the desktop package leaves them out.") from None

    hf_logging.disable_progress_bar()  # progress is reported through the callback instead
    device = pick_device()
    dtype = torch.float32
    if device == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    folder, file = str(model_path.parent), model_path.name
    try:
        with _gguf_shortcuts():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
            check_cancel()
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dtype,
                                                         local_files_only=True)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as exc:
        raise TrainingError(f"transformers cannot load {file} for training ({type(exc).__name__}: {exc}). "
                            "Training works with llama, mistral, qwen2 and similar models in common "
                            "quantisations (F16, Q8_0, Q4_K…).") from None
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError(f"{file} has no chat template, so its chats cannot be laid out for training.")
    check_cancel()
    return tokenizer, model.to(device), device


@contextlib.contextmanager
def _gguf_shortcuts() -> Iterator[None]:
    """Let transformers' GGUF loader reuse work it repeats, while it runs.

    Loading a tokenizer and a model parses the whole GGUF header three times (4 s each for a
    135M model: the reader decodes every vocabulary entry one by one) and builds gguf's
    tensor-name table once per module (400 times, 5 s). Neither changes between calls, so one
    parsed reader per file and one table per architecture serve them all; loading the
    built-in model takes 7 s instead of 20. Both are restored afterwards.
    """
    import gguf

    originals = {name: getattr(gguf, name, None) for name in ("GGUFReader", "get_tensor_name_map")}
    if None in originals.values():  # another gguf version: load the slow way
        yield
        return
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = originals["GGUFReader"](path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(originals["get_tensor_name_map"])
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(gguf, name, value)
        readers.clear()


def _encode(tokenizer: Any, chat: Chat, max_length: int, add_bos: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels of one chat: the assistant's messages are learned, the rest is context.

    The chat is rendered with the model's own template, piece by piece (the prompt before
    each answer, then the answer with its end-of-turn), so the boundaries are exact.
    """
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    bos = getattr(tokenizer, "bos_token_id", None)
    for i, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(chat[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(chat[:i + 1], tokenize=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise TrainingError("This model's chat template rewrites earlier messages when the chat grows, "
                                "so answers cannot be picked out for training.")
        context = tokenizer(prompt[len(rendered):], add_special_tokens=False)["input_ids"]
        answer = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        if not ids and add_bos and bos is not None and not prompt.startswith(str(tokenizer.bos_token)):
            context = [bos, *context]
        ids += context + answer
        labels += [IGNORE] * len(context) + answer
        rendered = full
    return ids[:max_length], labels[:max_length]


def _add_lora(model: Any, config: TrainConfig) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)}
    missing = [m for m in config.target_modules if m not in present]
    if missing:
        raise TrainingError(f"This model has no {', '.join(missing)} layers; its linear layers are "
                            f"{', '.join(sorted(present))}.")
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                      lora_dropout=config.dropout, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _run(model: Any, tokenizer: Any, examples: list[tuple[list[int], list[int]]], config: TrainConfig,
         device: str, report: Callable[[TrainProgress], None], check_cancel: Callable[[], None],
         started: float) -> TrainResult:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    epochs = config.epochs_for(len(examples))
    total = per_epoch * epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    order = random.Random(config.seed)
    losses: list[float] = []
    model.train()
    step = 0
    for epoch in range(1, epochs + 1):
        shuffled = list(examples)
        order.shuffle(shuffled)
        for start in range(0, len(shuffled), config.batch_size):
            check_cancel()
            batch = shuffled[start:start + config.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, labs) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                labels[row, :len(labs)] = torch.tensor(labs)
                mask[row, :len(ids)] = 1
            # Cosine decay to a tenth of the rate: big steps first, settling at the end.
            rate = config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, total))))
            for group in optimizer.param_groups:
                group["lr"] = rate
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                raise TrainingError("Training diverged (the loss is not a number); lower the learning rate.")
            losses.append(loss)
            report(TrainProgress("training", f"Step {step} of {total} · epoch {epoch} of {epochs}",
                                 step, total, epoch, loss, time.perf_counter() - started))
    model.eval()
    return TrainResult(Path(), len(examples), step, losses[-1], time.perf_counter() - started, device, epochs,
                       losses)
