"""LoRA adapters: stack and scale GGUF LoRA adapters on the loaded model, convert PEFT adapters,
and train new ones in the app. A built-in Parley plugin.

Which adapters a turn uses: the turn's own choice (``parley chat --lora NAME=SCALE``,
remembered for the conversation), else the conversation's remembered choice, else the adapters
new conversations start with (chosen in the LoRA panel with no conversation open, or with
``parley lora apply``). Each adapter is checked against the loaded model before it is used; one
that does not fit is left out with a note in the trace, and the answer goes on without it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from desktop_app.api import (
    Adapter,
    EngineError,
    Option,
    PluginContext,
    Turn,
    hookimpl,
)

__version__ = "0.1.0"
__all__ = ["PLUGIN", "State", "state"]

log = logging.getLogger(__name__)

PLUGIN = "lora"


class State:
    """The plugin's context, its adapter library, and what it last put on the engine."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        self._library: Any = None
        self._lock = threading.Lock()
        #: The adapters of the last turn: re-applied when another model (or the same) is loaded.
        self.applied: list[Adapter] = []
        #: Problems found when re-applying after a model load (or with adapters other plugins
        #: offer), for the window to show once.
        self.notices: list[str] = []
        self.choice: Any = None

    def start(self, context: PluginContext) -> None:
        """Take a fresh context (nothing from an earlier one carries over)."""
        from dataclasses import asdict

        self.__init__()
        self.context = context
        # A conversation without adapters of its own starts with the library's defaults.
        self.choice = context.choice(
            "adapters", default=lambda: {"adapters": [asdict(c) for c in self.library.defaults()]},
            fields=("adapters",))

    @property
    def library(self) -> Any:
        """The adapter library in the data folder's ``adapters/`` (opened on first use)."""
        with self._lock:
            if self._library is None:
                from desktop_app_lora.library import AdapterLibrary

                self._library = AdapterLibrary(self.context.data_dir / "adapters")
            return self._library

    # -- per conversation ------------------------------------------------------------------
    def choices_for(self, conversation_id: int | None) -> tuple[list[Any], bool]:
        """(the conversation's adapters as Choices, whether the conversation remembered them)."""
        from desktop_app_lora.library import Choice

        choice, remembered = self.choice.current(conversation_id)
        adapters = choice.get("adapters")
        return [c for c in map(Choice.parse, adapters if isinstance(adapters, list) else []) if c], remembered

    def remember(self, conversation_id: int | None, choices: list[Any]) -> None:
        """Store a conversation's adapters; without a conversation, those new ones start with."""
        from dataclasses import asdict

        if conversation_id is None:
            self.library.set_defaults(choices)
        else:
            self.choice.remember(conversation_id, {"adapters": [asdict(c) for c in choices]})

    # -- checking against a model ----------------------------------------------------------
    def resolve(self, choices: list[Any], model_path: Path | None) -> tuple[list[Adapter], list[str]]:
        """The adapters to apply for ``choices`` (scale 0 left out), and why any others cannot be."""
        adapters: list[Adapter] = []
        problems: list[str] = []
        for choice in choices:
            entry = self.library.find(choice.name)
            if entry is None:
                problems.append(f"The LoRA adapter “{choice.name}” is no longer in the library; "
                                "answered without it.")
                continue
            if choice.scale == 0:
                continue
            problem = self.fits(choice.name, model_path)
            if problem is not None:
                problems.append(f"LoRA adapter “{choice.name}” left out: {problem}")
                continue
            adapters.append(Adapter(choice.name, str(self.library.path(entry)), choice.scale))
        return adapters, problems

    def fits(self, name: str, model_path: Path | None) -> str | None:
        """Why adapter ``name`` cannot be used with ``model_path`` (None: any model), or None if it can."""
        from desktop_app_lora.adapters import AdapterError, check_compatible, read_adapter_info

        try:
            path = self.library.path(self.library.get(name))
            info = read_adapter_info(path)
            if model_path is not None and self.context is not None and self.context.model.loaded:
                # A remote engine says what it can apply; its model's weights are not here to compare.
                problem = self.context.model.adapter_problem(path)
                if problem is not None or not self.context.model.runs_here:
                    return problem
            if model_path is not None:
                check_compatible(info, model_path)
        except AdapterError as exc:
            return str(exc)
        return None

    def system_prompt_for(self, model_path: Path | None) -> str:
        """The system prompt answers get with ``model_path`` when nobody set one (for training)."""
        configured = self.context.app_setting("chat.system_prompt")
        return configured or self.context.default_system_prompt(model_path)

    def close(self) -> None:
        """Forget the library (a new context may use another data folder)."""
        self._library = None


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context, and list the adapters other plugins provide through ``register_adapters``."""
    state.start(context)
    for entry in context.collect("register_adapters"):
        _provide(entry.item, entry.plugin)


def _provide(adapter: Adapter, plugin: str) -> None:
    from desktop_app_lora.adapters import AdapterError

    try:
        state.library.provide(adapter.name, adapter.path, plugin)
    except AdapterError as exc:
        log.warning("adapter %s from the plugin %s left out: %s", adapter.name, plugin, exc)
        state.notices.append(f"The plugin {plugin} offers the LoRA adapter “{adapter.name}”, "
                             f"which cannot be used: {exc}")


@hookimpl
def register_settings(register) -> None:
    """Training defaults (the train dialog and ``parley lora train`` start from these)."""
    register([
        Option("rank", int, 8, "LoRA rank: the size of what is learned. 8 suits small data.", minimum=1, maximum=256),
        Option("alpha", float, 16.0, "LoRA alpha: the strength of what is learned (twice the rank is usual).",
               minimum=0.5, maximum=1024.0),
        Option("learning_rate", float, 0.002, "How big each training step is. Lower it if the loss jumps about.",
               minimum=0.00001, maximum=0.1),
        Option("epochs", int, 0, "How often training goes through all examples; 0 = automatic (enough passes "
               "for at least 16 steps, at least 3).", minimum=0, maximum=1000),
        Option("batch_size", int, 4, "Examples per training step.", minimum=1, maximum=256),
        Option("max_length", int, 512, "Longest example in tokens; longer ones are cut.", minimum=16, maximum=32768),
        Option("target_modules", str, "q_proj,k_proj,v_proj,o_proj",
               "Layers that learn (comma-separated): q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."),
    ])


@hookimpl
def prepare_turn(turn: Turn) -> None:
    """Add the conversation's adapters that fit the loaded model; note the ones that do not."""
    from desktop_app_lora.library import Choice

    chosen = (turn.plugin_options.get(PLUGIN) or {}).get("adapters")
    if chosen is not None:
        choices = [c for c in map(Choice.parse, chosen) if c]
        if turn.conversation_id is not None:
            state.remember(turn.conversation_id, choices)
    else:
        choices, remembered = state.choices_for(turn.conversation_id)
        if choices and not remembered and turn.conversation_id is not None:
            state.remember(turn.conversation_id, choices)
    model = state.context.model if state.context is not None else None
    if not choices or model is None or not model.loaded:
        state.applied = []
        return
    adapters, problems = state.resolve(choices, model.path)
    for adapter in adapters:
        try:
            model.load_adapter(adapter.path)  # llama.cpp reads it now, so a refusal is a note, not a failure
        except EngineError as exc:
            problems.append(str(exc))
            continue
        turn.add_adapter(adapter)
    state.applied = list(turn.adapters)
    for problem in problems:
        turn.add_note(problem)


@hookimpl
def model_loaded(engine: Any) -> None:
    """Put the last turn's adapters back on the freshly loaded model, if they fit it."""
    from desktop_app_lora.library import Choice

    if not state.applied or state.context is None:
        return
    adapters, problems = state.resolve([Choice(a.name, a.scale) for a in state.applied], engine.path)
    try:
        engine.set_adapters(adapters)
    except EngineError as exc:
        problems.append(str(exc))
        adapters = []
    state.applied = adapters
    state.notices.extend(problems)


@hookimpl
def register_commands(subparsers) -> None:
    """`parley lora list|add|remove|info|apply|convert|train|search|download` and `parley chat --lora NAME=SCALE`."""
    from desktop_app_lora import cli

    cli.register(subparsers)


@hookimpl
def register_download_installers(register) -> None:
    """LoRA adapters from the hub (download kind "adapter"): a GGUF one is added to the library as
    it is, a PEFT one converted for its model first."""

    def install(model: Any, files: list, origin: dict) -> tuple[str, Path]:
        from desktop_app_lora.adapters import AdapterError
        from desktop_app_lora.hub_install import make_installer

        if state.context is None:
            raise AdapterError("The LoRA plugin is not running, so the adapter cannot be added.")
        access = state.context.model
        return make_installer(state.library, state.context.cache_dir,
                              lambda: access.path if access.loaded else None)(model, files, origin)

    register("adapter", install)


@hookimpl
def register_panels(register) -> None:
    """The LoRA side panel."""

    def make(context, parent):
        from desktop_app_lora.ui import LoraPanel

        return LoraPanel(context, context.window, parent)

    register("LoRA", make, area="right")


@hookimpl
def register_actions(register) -> None:
    """Plugins → “Teach it this…” (train an adapter on answers of the open conversation) and
    “Find LoRA adapters on the hub…”."""

    def teach(window) -> None:
        from desktop_app_lora.ui import LoraPanel

        panel = window.find_panel(LoraPanel)
        if panel is not None:
            panel.open_train_dialog(from_conversation=True)

    register("Teach it this…", teach)

    def find_on_hub(window) -> None:
        from desktop_app_lora.ui import LoraPanel

        panel = window.find_panel(LoraPanel)
        if panel is not None:
            panel.open_hub_dialog()

    register("Find LoRA adapters on the hub…", find_on_hub)


@hookimpl
def register_services(register) -> None:
    """``lora.train`` for other plugins (the strategy lab's train-lora candidate)."""
    from desktop_app_lora.services import train_examples

    register("lora.train", train_examples)
