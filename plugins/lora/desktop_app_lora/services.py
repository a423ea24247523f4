"""What the LoRA plugin offers other plugins (``register_services``)."""

from __future__ import annotations

import threading
from typing import Any, Callable

from desktop_app.api import ParleyError

__all__ = ["train_examples"]


def train_examples(examples: list[tuple[str, str]], *, name: str, on_progress: Callable[[str], None] | None = None,
                   stop: threading.Event | None = None) -> str:
    """``lora.train``: train an adapter for the loaded model on (question, answer) pairs, with
    the plugin's training settings, and add it to the adapter library as ``name`` (an adapter of
    that name already there is used as it is: training is slow and the examples are the same).
    Returns the adapter's name; ParleyError when cancelled (nothing is added) or training fails."""
    from desktop_app_lora import state
    from desktop_app_lora.cli import config_from_settings
    from desktop_app_lora.data import with_system_prompt
    from desktop_app_lora.train import train_adapter

    context = state.context
    if context is None:
        raise ParleyError("The LoRA plugin has not started yet.")
    if state.library.find(name):
        return name
    if not examples:
        raise ParleyError("Training needs at least one example.")
    model = context.model.path or context.model_file(None)  # the model the adapter is for
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in examples]
    chats = with_system_prompt(chats, state.system_prompt_for(model))
    config = config_from_settings(state)
    config.validate()

    def progress(p: Any) -> None:
        if on_progress is not None:
            on_progress(f"Training {name}: {p.message}" + (f" (loss {p.loss:.3f})" if p.loss is not None else ""))

    entry, _ = train_adapter(model, chats, state.library, name, config, progress=progress, cancel=stop,
                             work_dir=context.cache_dir, source=f"trained by the strategy lab on {len(chats)} examples")
    return entry.name
