"""The plugin contract: every hook a Parley plugin can implement.

Plugins implement these with ``@hookimpl`` from :mod:`desktop_app.api`. A plugin that
raises inside a hook is switched off for the rest of the session, its error recorded and
shown; the chat goes on without it.

Compatibility rule: arguments are only ever added, never renamed or removed, and an
implementation may accept fewer arguments than the spec offers.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from desktop_app.core.plugin_context import PluginContext
    from desktop_app.core.turn import Turn, TurnResult

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME"]

PROJECT_NAME = "desktop_app"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_prompt_templates(register: Callable[[Any], None]) -> None:
    """Add prompt templates by calling ``register(template)`` once per template.

    :param register: records the template and the plugin that gave it; clashing names
        are resolved by the host.
    Called on the GUI or CLI main thread at start-up; must not block.
    """


@hookspec
def register_tools(register: Callable[[Any], None]) -> None:
    """Add tools the model may call by calling ``register(tool)`` with a :class:`desktop_app.api.Tool`.

    Called on the main thread at start-up; must not block.
    """


@hookspec
def register_adapters(register: Callable[[Any], None]) -> None:
    """Add LoRA adapters by calling ``register(adapter)`` with a :class:`desktop_app.api.Adapter`.

    The LoRA plugin lists them in its library (the file is used where it is, never copied or
    deleted) and the user picks them per conversation; a file that is not a usable adapter is
    left out with a message. Called once by the LoRA plugin when the app has started, on the
    main thread; must not block.
    """


@hookspec
def register_settings(register: Callable[[list], None]) -> None:
    """Declare this plugin's settings by calling ``register([Option, ...])`` once.

    Options are stored under ``[plugins.<plugin name>]`` in settings.toml and shown in the
    plugin's settings form. Read them with ``context.settings.get("<key>")``.
    Called on the main thread at start-up; must not block.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``parley`` subcommands: ``p = subparsers.add_parser(...)``, then ``p.set_defaults(handler=fn)``.

    ``fn(args, context)`` runs the command (``context`` is the plugin's own) and returns an
    exit code (None means 0).
    A plugin may also add options to existing commands (``subparsers.choices["chat"]``);
    ``chat`` passes ``args.plugin_options`` (a dict per plugin name) on to
    ``turn.plugin_options``.
    Called on the main thread while the command line is parsed; must not block.
    """


@hookspec
def register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Add generation backends by calling ``register(name, factory)``.

    ``factory(settings)`` returns a :class:`desktop_app.api.Backend` (e.g. a client for an
    OpenAI-compatible server); one that lacks part of it is refused with the missing names.
    It is made when first needed. The models its optional ``models()`` lists
    (:class:`desktop_app.api.BackendModel`, references ``NAME:…``) join the model picker, and
    loading one of them runs it on this backend (the remote engines plugin works so). The
    setting ``model.backend`` picks the backend for model files; the built-in one is
    ``"llama.cpp"``. Called on the main thread at start-up; must not block.
    """


@hookspec
def register_download_installers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Take hub downloads of a kind of your own by calling ``register(kind, install)``.

    A :class:`desktop_app.api.HubModelFile` whose ``kind`` is ``kind`` then downloads through
    the app's one download manager (``context.downloads``) with a model's guarantees: in the
    background, resumable, paused and resumed, its files' sizes and SHA-256 checked, and listed
    with the other downloads. Once every file is verified, ``install(model, files, origin)``
    puts it in place: ``files`` are the downloaded parts, in order, in a folder deleted after
    (move them, or leave them); ``origin`` is where they came from (repository, revision,
    files). It returns ``(name, path)`` of what it made, runs on the download's worker thread
    and may block; a :class:`desktop_app.api.ParleyError` it raises fails the download with its
    message. "model" is the app's own kind and cannot be taken; of two plugins registering one
    kind, the first loaded wins. Called when the download manager is first made; must not block.
    """


@hookspec
def register_embedders(register: Callable[[str, Callable[[list[str]], list[list[float]]]], None]) -> None:
    """Offer text embedding models by calling ``register(name, embed)``.

    ``embed(texts)`` returns one vector (a list of floats) per text; it may block (load a model)
    and is called from worker threads. Other plugins find them with ``context.embedders()``
    (the API server serves them at ``/v1/embeddings``). Called when a plugin asks; must not block.
    """


@hookspec
def prepare_turn(turn: "Turn") -> None:
    """Enrich a turn before it is rendered: system text, few-shot examples, context, tools, options.

    Use only the turn's ``add_*``/``set_*`` methods, so each addition is labelled with this
    plugin in the trace. Every enabled plugin is called (later registered plugins run first,
    as in pluggy), but the prompt does not depend on that order: plugins' system lines are
    put in alphabetical order of plugin name after the base prompt.
    Called on the generation worker thread; may block briefly (e.g. a vector search).
    """


@hookspec(firstresult=True)
def generate_turn(turn: "Turn", generate: Callable[..., Any]) -> "TurnResult | None":
    """Own generation for this turn, e.g. sample several answers and vote.

    :param generate: ``generate(turn, options=None, on_token=None) -> TurnResult`` runs one
        pass through the engine; call it as often as needed. ``on_token(text)`` receives
        streamed text; leave it out to show the pass as it is written. ``generate.emit(text)``
        streams progress text of the strategy's own (e.g. "sample 2 of 5").
        ``generate.many(turn, options_list, on_result=None, show=0) -> list[TurnResult]``
        writes one answer per options at once, in one batch with the prompt evaluated once,
        when the model can (else one after another, each streamed). Answer ``show`` streams
        as it is written (None: none). ``on_result(index, result)`` is called as each one
        ends; return True to stop the others (they end "cancelled"). The results come in the
        order of ``options_list``. Everything streamed
        while the strategy runs is shown as progress, not as the answer (a program asking
        through the API gets only the returned text). The engine's cancel flag ends the current
        pass with finish_reason "cancelled": stop there.
    :return: the final :class:`TurnResult`, or None to let the next plugin (or the default
        single pass) generate. Its ``text`` is the answer; put words about it for people (how
        samples voted) in ``note``: stored and shown under the answer, kept out of ``text``.
    Stops at the first non-None result. Called on the generation worker thread; may block.
    """


@hookspec(firstresult=True)
def approve_tool_call(call: dict[str, Any]) -> "bool | str | None":
    """Decide whether a tool call may run before anyone asks the user.

    :param call: ``{"tool": name, "arguments": {...}, "source": who provides the tool}``.
    :return: True runs it, False refuses it, ``"ask"`` asks the user (even for a tool that
        would run unasked), None leaves the decision to other plugins and then to the tool's
        default (ask the user when it ``requires_approval``, else run).
    Stops at the first non-None result. Called on the generation worker thread; must not
    block waiting for the user (return "ask" instead).
    """


@hookspec
def remember_tool_policy(tool: str, policy: str) -> None:
    """The user answered a tool call's approval with "always": keep it for this tool.

    :param tool: the tool's name.
    :param policy: ``"allow"`` or ``"deny"``.
    A plugin that keeps approval policies stores it and applies it through
    ``approve_tool_call`` from then on. Called on the generation worker thread; may block briefly.
    """


@hookspec
def model_loaded(engine: Any) -> None:
    """A model has just been loaded (e.g. re-apply LoRA adapters).

    ``engine`` is the model as the plugin's context shows it (:class:`desktop_app.api.ModelAccess`:
    ``path``, ``loaded``, ``set_adapters``...). Called on the thread that loaded the model; may
    block briefly.
    """


@hookspec
def model_unloading(engine: Any) -> None:
    """The model is about to be unloaded (free anything tied to it).

    ``engine`` is a :class:`desktop_app.api.ModelAccess`, as in ``model_loaded``. Called on the
    thread that unloads the model; may block briefly.
    """


@hookspec
def after_turn(turn: "Turn", result: "TurnResult") -> None:
    """A turn has finished and its answer is stored (e.g. logging, memory).

    Called on the generation worker thread after the answer is saved; may block briefly.
    Not called for turns that failed.
    """


@hookspec(historic=True)
def app_started(context: "PluginContext") -> None:
    """The app is ready: ``context`` is this plugin's own :class:`desktop_app.api.PluginContext`
    (its settings, folders, the conversations, the model, the tools; see docs/plugins.md).

    Keep it for the other hooks. Historic: a plugin registered later still receives the call.
    Called on the main thread; must not block.
    """


@hookspec
def app_closing(context: "PluginContext") -> None:
    """The application is about to close: stop background work and child processes.

    ``context`` is the plugin's own, as in ``app_started``. Called on the main thread before
    the model is unloaded and the store closed; should finish within a few seconds.
    """


@hookspec
def register_services(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Offer functions other plugins may call by calling ``register(name, function)``.

    Names are dotted, the offering plugin's area first (e.g. ``"documents.index_folder"``);
    other plugins get the function with ``context.service(name)`` and call it with the
    arguments its documentation gives. Of two plugins offering one name, the first loaded wins.
    A service may block (index files, train): callers run it off the GUI thread. Called when a
    plugin asks for a service; must not block.
    """
