"""Train in a separate process, for the window.

Training in a thread of the window's own process works, but loading the base model holds
Python's interpreter lock for up to a quarter of a second at a time (measured), which the
window feels as stutter, and torch keeps the memory it used until the app quits. A child
process has its own interpreter and hands all its memory back when it ends. It trains and
converts; the parent adds the result to the library, so only one process ever writes it.

Progress and the outcome come back over a queue; cancelling sets an event the trainer
checks between steps.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from desktop_app_lora.train import TrainConfig, TrainingCancelled, TrainingError, TrainProgress, TrainResult

__all__ = ["train_in_subprocess"]

#: How often the parent looks at the child while waiting for news (seconds).
_POLL = 0.2


def train_in_subprocess(
    model_path: Path,
    chats: list,
    out_gguf: Path,
    name: str,
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train and convert to ``out_gguf`` in a child process; blocks until it is done.

    Raises :class:`TrainingCancelled` or :class:`TrainingError` like the in-process trainer,
    and TrainingError when the child dies (e.g. killed for lack of memory).
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("peft") is None:
        # Checked here: a child started without them would only fail after a second start-up.
        raise TrainingError("Training needs torch, transformers and peft. Install Parley with pip to get "
                            "them; the desktop package leaves them out.")
    context = multiprocessing.get_context("spawn")  # never fork a process that runs Qt and llama.cpp
    messages = context.Queue()
    stop = context.Event()
    child = context.Process(target=_child, name="parley-lora-training", daemon=True,
                            args=(str(model_path), chats, str(out_gguf), name, asdict(config), messages, stop))
    child.start()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                stop.set()
            try:
                kind, payload = messages.get(timeout=_POLL)
            except queue.Empty:
                if not child.is_alive():
                    raise TrainingError(f"The training process ended unexpectedly (exit code {child.exitcode}); "
                                        "it may have run out of memory.") from None
                continue
            if kind == "progress":
                if progress is not None:
                    progress(payload)
            elif kind == "done":
                return payload
            elif kind == "cancelled":
                raise TrainingCancelled(payload)
            else:
                raise TrainingError(payload)
    finally:
        stop.set()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
        messages.close()


def _child(model_path: str, chats: list, out_gguf: str, name: str, config: dict, messages: Any, stop: Any) -> None:
    """The child: train, convert, and report everything on ``messages``."""
    from desktop_app.api import ParleyError
    from desktop_app_lora.convert import convert_peft_adapter
    from desktop_app_lora.train import train_metadata, train_peft

    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="parley-lora-", dir=Path(out_gguf).parent) as work:
            settings = TrainConfig(**{**config, "target_modules": tuple(config["target_modules"])})
            result = train_peft(model_path, chats, Path(work) / "peft", settings,
                                progress=lambda p: messages.put(("progress", p)), cancel=stop)
            messages.put(("progress", TrainProgress("converting", "Converting to GGUF…", result.steps,
                                                    result.steps, result.epochs, result.final_loss, result.seconds)))
            convert_peft_adapter(result.peft_dir, out_gguf, model_path, name=name,
                                 extra_metadata=train_metadata(result, settings))
            if stop.is_set():
                raise TrainingCancelled("Training was cancelled; nothing was added.")
            result.peft_dir = Path()
            messages.put(("done", result))
    except TrainingCancelled as exc:
        messages.put(("cancelled", str(exc)))
    except ParleyError as exc:
        messages.put(("error", str(exc)))
    except BaseException as exc:  # reported to the window instead of vanishing with the process
        messages.put(("error", f"Training failed: {type(exc).__name__}: {exc}"))
