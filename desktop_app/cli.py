"""The ``parley`` command: the desktop app by default, and headless subcommands.

Only argparse is imported at start-up; the store, the engine and llama.cpp are imported
by the command that needs them, so ``parley --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from desktop_app.core.errors import DataFolderError
    from desktop_app.core.paths import AppPaths
    from desktop_app.core.settings import Settings
    from desktop_app.plugins import PluginHost

    try:
        paths = AppPaths.default().ensure()
    except DataFolderError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    # Plugins may add subcommands, so they are loaded before parsing (they are light by contract).
    # Read once: a corrupt file is moved aside by this read, and its warning must reach the user.
    settings = Settings.load(paths.settings_file)
    host = PluginHost(disabled=settings.get("plugins.disabled"), plugins_dir=paths.plugins_dir).load_all()
    parser = build_parser(host)
    args = parser.parse_args(argv)
    handler: Callable[..., Any] = getattr(args, "handler", _run_gui)
    from desktop_app.core.instance import AlreadyRunning, InstanceLock

    # One process per data folder, so nothing is written twice (see core/instance.py).
    gui = handler is _run_gui
    try:
        lock = InstanceLock(paths.data_dir).acquire("the window" if gui else _command_name(argv))
    except AlreadyRunning as exc:
        if gui and exc.holder.get("command") == "the window":
            from desktop_app.ui.single_instance import show_running_window

            if show_running_window(paths.data_dir):
                print("parley: Parley is already open; its window was brought to the front.", file=sys.stderr)
                return 0
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    with lock:
        return _run(handler, args, paths, host, settings)


def _command_name(argv: list[str]) -> str:
    """What a refused second process is told this one is, e.g. "parley models list".

    Only the command words: a question typed after ``parley chat`` is nobody else's business.
    """
    words = []
    for word in argv[:2]:
        if not re.fullmatch(r"[a-z][a-z-]{0,30}", word):
            break
        words.append(word)
    return " ".join(["parley", *words[:1 if words[:1] == ["chat"] else 2]])


def _run(handler: Callable[..., Any], args: argparse.Namespace, paths: Any, host: Any, settings: Any) -> int:
    """Build the context, run the command's handler and close the context; the exit code."""
    from desktop_app.context import build_context
    from desktop_app.core.errors import ParleyError
    from desktop_app.core.store import StoreError

    try:
        context = build_context(paths, host=host, settings=settings)
    except StoreError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    for warning in context.warnings:
        print(f"parley: warning: {warning}", file=sys.stderr)
    plugin = getattr(args, "handler_plugin", None)
    record = context.plugins.records.get(plugin) if plugin else None
    try:
        if record is not None and record.status == "failed":
            print(f"parley: the plugin {plugin} was switched off ({record.error}), so its command cannot run.",
                  file=sys.stderr)
            code = 1
        else:
            code = handler(args, context.plugin_context(plugin) if plugin else context)
    except (ParleyError, StoreError, KeyError, ValueError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"parley: {message}", file=sys.stderr)
        code = 1
    except Exception as exc:
        if plugin is None:
            raise  # Parley's own bug: the traceback is what a report needs
        import logging

        logging.getLogger(__name__).exception("the command of plugin %s failed", plugin)
        print(f"parley: the plugin {plugin} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        context.close()
    return int(code or 0)


def build_parser(host: Any = None) -> argparse.ArgumentParser:
    """Build the argument parser, including subcommands plugins register."""
    from desktop_app import __version__

    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: a private chat app for local GGUF models. Without a command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    chat = sub.add_parser("chat", help="ask a question and stream the answer to the terminal")
    chat.add_argument("question", nargs="?", help="the question; read from stdin when omitted")
    chat.add_argument("-m", "--model", help="model name from the library, or a path to a GGUF file")
    chat.add_argument("-s", "--system", help="system prompt for a new conversation")
    chat.add_argument("-c", "--conversation", type=int, help="continue the conversation with this id")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--top-p", type=float, dest="top_p")
    chat.add_argument("--top-k", type=int, dest="top_k")
    chat.add_argument("--min-p", type=float, dest="min_p")
    chat.add_argument("--repeat-penalty", type=float, dest="repeat_penalty")
    chat.add_argument("--max-tokens", type=int, dest="max_tokens")
    chat.add_argument("--seed", type=int)
    chat.add_argument("--stop", action="append", help="stop the answer at this text (repeatable)")
    chat.add_argument("--stats", action="store_true", help="print speed and token counts afterwards")
    chat.add_argument("--allow-tools", action="store_true",
                      help="run tool calls that would ask for approval without asking (policies set to deny still apply)")
    chat.set_defaults(handler=_cmd_chat)

    models = sub.add_parser("models", help="the model library").add_subparsers(title="actions", metavar="ACTION", required=True)
    p = models.add_parser("list", help="list models")
    p.set_defaults(handler=_cmd_models_list)
    p = models.add_parser("add", help="add a GGUF file")
    p.add_argument("path")
    p.add_argument("--copy", action="store_true", help="copy the file into Parley's data folder")
    p.add_argument("--name")
    p.set_defaults(handler=_cmd_models_add)
    p = models.add_parser("info", help="show a model's metadata, its settings and what loading it would choose")
    p.add_argument("name", nargs="?", help="name or path (default: the configured model)")
    p.set_defaults(handler=_cmd_models_info)
    p = models.add_parser("set", help="give a library model a setting of its own",
                          description="Give a library model a setting of its own, used instead of the global "
                                      "one whenever that model is loaded. Settings: context_length, gpu_layers "
                                      "(both also auto), temperature, top_p, top_k, min_p, repeat_penalty, "
                                      "max_tokens, system_prompt.")
    p.add_argument("name", help="the model's name in the library")
    p.add_argument("key", help="the setting, e.g. temperature or context_length")
    p.add_argument("value", help="its value, e.g. 0.6, 8192 or auto")
    p.set_defaults(handler=_cmd_models_set)
    p = models.add_parser("reset", help="put a library model's settings back to the defaults")
    p.add_argument("name", help="the model's name in the library")
    p.add_argument("keys", nargs="*", metavar="KEY", help="only these settings (default: all of them)")
    p.set_defaults(handler=_cmd_models_reset)
    p = models.add_parser("remove", help="remove a model from the library")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_models_remove)
    p = models.add_parser("use", help="make a model the default")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_models_use)
    _add_hub_catalog_parsers(models)

    plugins = sub.add_parser("plugins", help="installed plugins").add_subparsers(title="actions", metavar="ACTION", required=True)
    p = plugins.add_parser("list", help="list plugins with their source and status")
    p.set_defaults(handler=_cmd_plugins_list)
    for action in ("enable", "disable"):
        p = plugins.add_parser(action, help=f"{action} a plugin")
        p.add_argument("name")
        p.set_defaults(handler=_cmd_plugins_toggle, enable=action == "enable")
    p = plugins.add_parser("install", help="install and enable a plugin: a .py file, a folder, a wheel or a pip requirement",
                           description="Shows what the plugin is and adds, then asks whether you trust it. A plugin "
                                       "is code that runs with your full rights.")
    p.add_argument("target", metavar="PATH|FOLDER|PIP-SPEC",
                   help="a .py plugin file or a package folder (copied into the plugins folder), or a project "
                        "folder, wheel or requirement such as parley-hello==0.2 (installed with pip)")
    p.add_argument("--trust", action="store_true", help="do not ask: you trust this code (for scripts)")
    p.add_argument("--no-index", action="store_true", help="pip: do not use the package index")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR",
                   help="pip: also look for packages in this folder (repeatable)")
    p.add_argument("--index-url", metavar="URL", help="pip: the package index to use")
    p.set_defaults(handler=_cmd_plugins_install)
    p = plugins.add_parser("remove", help="remove a plugin you installed (built-in ones can only be disabled)")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_plugins_remove)
    p = plugins.add_parser("new", help="write a ready plugin package to start from (a hook, a setting, a tool, "
                                       "a panel and a test)")
    p.add_argument("name", help="the plugin's name: lowercase letters, digits and _")
    p.add_argument("--folder", default=".", help="where to write it (default: the current folder)")
    p.set_defaults(handler=_cmd_plugins_new)

    convs = sub.add_parser("conversations", help="stored conversations").add_subparsers(title="actions", metavar="ACTION", required=True)
    p = convs.add_parser("list", help="list conversations, newest first")
    p.set_defaults(handler=_cmd_conv_list)
    p = convs.add_parser("show", help="print a conversation")
    p.add_argument("id", type=int)
    p.set_defaults(handler=_cmd_conv_show)
    p = convs.add_parser("export", help="export a conversation as Markdown or JSON")
    p.add_argument("id", type=int)
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(handler=_cmd_conv_export)
    p = convs.add_parser("import", help="import a conversation exported as JSON")
    p.add_argument("file")
    p.set_defaults(handler=_cmd_conv_import)
    p = convs.add_parser("search", help="full-text search across conversations")
    p.add_argument("query", nargs="+")
    p.set_defaults(handler=_cmd_conv_search)
    p = convs.add_parser("rename", help="rename a conversation")
    p.add_argument("id", type=int)
    p.add_argument("title")
    p.set_defaults(handler=_cmd_conv_rename)
    p = convs.add_parser("delete", help="delete a conversation")
    p.add_argument("id", type=int)
    p.set_defaults(handler=_cmd_conv_delete)

    if host is not None:
        _mark_handlers(sub, None)  # Parley's own commands get the app's context
        # Each plugin on its own, so its commands' handlers are given the plugin's context.
        for impl in host.hook.register_commands.get_hookimpls():
            impl.function(subparsers=sub)
            _mark_handlers(sub, impl.plugin_name)
    return parser


def _mark_handlers(subparsers: argparse._SubParsersAction, plugin: str | None) -> None:
    """Record which plugin owns each command's handler not yet claimed (None: Parley's own)."""
    for parser in set(subparsers.choices.values()):
        if "handler" in parser._defaults and "handler_plugin" not in parser._defaults:
            parser.set_defaults(handler_plugin=plugin)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _mark_handlers(action, plugin)


# -- the app ---------------------------------------------------------------------------------
def _run_gui(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.ui.app import run

    return run(context)


# -- chat ------------------------------------------------------------------------------------
def _terminal_approver(allow_all: bool) -> Callable[[Any, Any], Any]:
    """Ask on the terminal whether a tool call may run (refused when there is no terminal)."""

    def approve(call: Any, tool: Any) -> Any:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        if allow_all:
            return True
        if not sys.stdin.isatty():
            print(f"parley: {call.name} {arguments} needs your approval, but there is no terminal to ask; "
                  "refused. Pass --allow-tools, or set its policy with `parley tools policy`.", file=sys.stderr)
            return False
        while True:
            sys.stderr.write(f"\nAllow {call.name} ({tool.source or 'tool'}) with {arguments}? "
                             "[y]es / [n]o / [a]lways / ne[v]er: ")
            sys.stderr.flush()
            try:
                answer = input().strip().lower()
            except EOFError:
                return False
            choices = {"y": True, "yes": True, "n": False, "no": False, "": False,
                       "a": "always", "always": "always", "v": "never", "never": "never"}
            if answer in choices:
                return choices[answer]

    return approve


def _describe_tool_outcome(outcome: Any) -> str:
    """One line about a finished tool call, for the terminal."""
    arguments = json.dumps(outcome.call.arguments, ensure_ascii=False)
    if outcome.error:
        return f"[tool {outcome.call.name} {arguments}: {outcome.decision}: {outcome.error}]"
    result = outcome.result if len(outcome.result) <= 200 else outcome.result[:200] + "…"
    return f"[tool {outcome.call.name} {arguments} -> {result} ({outcome.duration_ms:.1f} ms)]"


def _cmd_chat(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.core.chat import ToolCallFinished, TurnFailed, TurnFinished
    from desktop_app.core.engine import TokenEvent

    overrides = {k: getattr(args, k) for k in
                 ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed")
                 if getattr(args, k, None) is not None}
    if getattr(args, "stop", None):
        overrides["stop"] = list(args.stop)
    interactive = args.question is None and sys.stdin.isatty()
    if args.question is None and not interactive:
        question = sys.stdin.read().strip()
        if not question:
            print("parley: no question given (pass it as an argument or on standard input)", file=sys.stderr)
            return 2
        questions = [question]
    else:
        questions = [args.question] if args.question is not None else []

    for warning in context.load_model(args.model):
        print(f"parley: warning: {warning}", file=sys.stderr)
    if args.conversation is not None:
        conversation = context.store.get_conversation(args.conversation)
    else:
        conversation = context.store.create_conversation(
            model=context.engine.model_path.name, system_prompt=args.system
        )

    def on_event(event: Any) -> None:
        if isinstance(event, TokenEvent):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ToolCallFinished):
            print(_describe_tool_outcome(event.outcome), file=sys.stderr)

    approve = _terminal_approver(getattr(args, "allow_tools", False))

    def ask(question: str) -> int:
        # Ctrl+C stops the answer (it is kept, marked incomplete) instead of killing Parley.
        context.engine.reset_cancel()
        previous = signal.signal(signal.SIGINT, lambda *_: context.engine.cancel())
        try:
            outcome = context.chat.send(conversation.id, question, on_event, options=overrides,
                                        plugin_options=getattr(args, "plugin_options", None),
                                        approve_tool=approve)
        finally:
            signal.signal(signal.SIGINT, previous)
        sys.stdout.write("\n")
        if isinstance(outcome, TurnFailed):
            print(f"parley: {outcome.error}", file=sys.stderr)
            return 1
        assert isinstance(outcome, TurnFinished)
        if outcome.result.samples:
            # A strategy streamed several samples; show what it settled on.
            print(f"\n=== chosen answer ===\n{outcome.result.text}{outcome.result.note}")
        if outcome.result.finish_reason == "cancelled":
            print("parley: stopped; the partial answer is saved.", file=sys.stderr)
        if args.stats:
            s = outcome.result.stats
            print(
                f"[{s['generated_tokens']} tokens, {s['tokens_per_second']:.1f} tokens/s, "
                f"first token after {s['time_to_first_token']:.2f} s, prompt {s['prompt_tokens']} tokens "
                f"({s['prompt_tokens_evaluated']} evaluated)]",
                file=sys.stderr,
            )
        return 0

    code = 0
    for question in questions:
        code = ask(question) or code
    if interactive:
        print(f"Chatting with {context.engine.model_path.name}. Ctrl+C stops an answer, Ctrl+D quits.",
              file=sys.stderr)
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                break
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            if line.strip():
                code = ask(line)
    print(f"(conversation {conversation.id}; continue it with --conversation {conversation.id})",
          file=sys.stderr)
    return code


# -- models ----------------------------------------------------------------------------------
def _cmd_models_list(args: argparse.Namespace, context: Any) -> int:
    current = context.settings.get("model.path")
    for entry in context.models.entries():
        mark = "*" if (entry.name == current or (not current and entry.builtin)) else " "
        kind = "built-in" if entry.builtin else "downloaded" if entry.origin else (
            "copied" if entry.copied else "referenced")
        print(f"{mark} {entry.name}\t{kind}\t{entry.path}")
    return 0


def _cmd_models_add(args: argparse.Namespace, context: Any) -> int:
    entry = context.models.add(args.path, copy=args.copy, name=args.name)
    print(f"Added {entry.name} ({entry.path}).")
    return 0


def _cmd_models_info(args: argparse.Namespace, context: Any) -> int:
    target = args.name or context.settings.get("model.path") or str(context.model_path())
    info = context.models.info(target)
    data = info.summary()
    data["file_size"] = f"{info.file_size / 1e6:.1f} MB"
    data["parameter_count"] = f"{info.parameter_count / 1e6:.1f} M"
    from desktop_app.core.engine import Engine

    data["gpu_offload_supported"] = Engine.gpu_offload_supported()
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    entry = context.model_entry(target)
    print(f"\nWhen loaded: {context.plan_load(target).explanation}")
    _print_model_settings(context, entry)
    return 0


def _print_model_settings(context: Any, entry: Any) -> None:
    from desktop_app.core.model_settings import model_option

    stored = context.in_library(entry)
    print(f"\nSettings of {entry.name}" + (" (change them with `parley models set NAME KEY VALUE`):" if stored else ":"))
    resolved = context.resolved_settings(entry)
    width = max(len(name) for name in resolved)
    for name, setting in resolved.items():
        value = model_option(context.settings, name).label(setting.value)
        text = str(value).replace("\n", " ")
        if len(text) > 60:
            text = text[:59] + "…"
        print(f"  {name:<{width}}  {text}  ({setting.source_text})")
    if not stored:
        print("This file is not in the library, so it cannot keep settings of its own; add it with "
              "`parley models add PATH` first.")


def _library_entry(context: Any, name: str) -> Any:
    """The library's model ``name``; a clear error for a file outside the library."""
    from desktop_app.core.errors import ModelFileError

    entry = context.model_entry(name)
    if not context.in_library(entry):
        raise ModelFileError(f"{name} is not in the library, so it has nowhere to keep settings of its own; "
                             "add it with `parley models add PATH` first.")
    return entry


def _cmd_models_set(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.core.model_settings import (LOAD_SETTINGS, model_option, setting_name, stored_settings,
                                                 validate_model_settings)

    entry = _library_entry(context, args.name)
    name = setting_name(args.key)
    own = dict(context.model_settings(entry))
    new = validate_model_settings(context.settings, {name: args.value})
    if name in new:
        own[name] = new[name]
    else:  # an empty system prompt: back to the default
        own.pop(name, None)
    context.models.set_settings(entry.name, stored_settings(context.settings, own))
    when = "the next time it is loaded" if name in LOAD_SETTINGS else "from its next answer"
    shown = model_option(context.settings, name).label(own[name]) if name in own else "the default"
    print(f"{entry.name}: {name} = {shown} (used {when}).")
    return 0


def _cmd_models_reset(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.core.model_settings import setting_name, stored_settings

    entry = _library_entry(context, args.name)
    own = dict(context.model_settings(entry))
    names = [setting_name(key) for key in args.keys] or list(own)
    for name in names:
        own.pop(name, None)
    context.models.set_settings(entry.name, stored_settings(context.settings, own) or None)
    which = ", ".join(names) if args.keys else "all its settings"
    print(f"{entry.name}: {which} back to the defaults.")
    return 0


def _cmd_models_remove(args: argparse.Namespace, context: Any) -> int:
    entry = context.models.remove(args.name)
    if context.settings.get("model.path") == entry.name:
        context.settings.set("model.path", "")
        context.settings.save()
    print(f"Removed {entry.name}" + (" and deleted its copy." if entry.copied else "."))
    return 0


def _cmd_models_use(args: argparse.Namespace, context: Any) -> int:
    entry = context.models.get(args.name)
    in_library = any(e.name == entry.name for e in context.models.entries())
    context.settings.set("model.path", "" if entry.builtin else entry.name if in_library else entry.path)
    context.settings.save()
    print(f"{entry.name} is now the default model.")
    return 0


# -- models on the hub -----------------------------------------------------------------------
def _add_hub_catalog_parsers(models: argparse._SubParsersAction) -> None:
    """``parley models search / files / login / logout``: the hub catalogue (core/hub.py)."""
    where = ("The hub is huggingface.co, or the hub.endpoint setting (settings.toml), or the HF_ENDPOINT "
             "environment variable.")
    p = models.add_parser("search", help="search the model hub for GGUF models", description=where)
    p.add_argument("query", nargs="+", help="words in the repository's name, e.g. qwen 0.5b")
    p.add_argument("--limit", type=_positive_int, default=30, help="at most this many repositories (default 30)")
    p.set_defaults(handler=_cmd_models_search)
    p = models.add_parser("files", help="a hub repository's models: sizes, fit on this machine, licence",
                          description=where)
    p.add_argument("repo", help="the repository, owner/name, as `parley models search` shows it")
    p.add_argument("--revision", help="a branch, tag or commit (default: main)")
    p.add_argument("--context", type=_positive_int, metavar="TOKENS",
                   help="the context length to estimate the fit at (default: the model.context_length setting)")
    p.set_defaults(handler=_cmd_models_files)
    p = models.add_parser("download", help="download a model from the hub into the library, checked against the "
                                           "hub's SHA-256",
                          description="Shows progress; Ctrl-C pauses, and the same command again resumes from the "
                                      "bytes already downloaded. The model joins the library only once every byte "
                                      "matches the hub's checksum. " + where)
    p.add_argument("repo", help="the repository, owner/name, as `parley models search` shows it")
    p.add_argument("file", help="the model's file name as `parley models files` shows it (for a split model, its "
                                "first part), or its quantisation, e.g. Q4_K_M")
    p.add_argument("--revision", help="a branch, tag or commit (default: main)")
    p.set_defaults(handler=_cmd_models_download)
    p = models.add_parser("login", help="save your hub access token in the system keyring",
                          description="Reads the token from standard input (hidden when it is a terminal), checks "
                                      "it with the hub when the hub can say, and keeps it in the system keyring, "
                                      "never in a file. " + where)
    p.set_defaults(handler=_cmd_models_login)
    p = models.add_parser("logout", help="forget the hub access token saved for the hub", description=where)
    p.set_defaults(handler=_cmd_models_logout)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    """Columns padded to their widest cell (the last one is not padded); ``right`` ones right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        cells[-1] = str(row[-1])
        print("  ".join(cells).rstrip())


def _licence_text(license: str | None, gated: str | bool) -> str:
    text = license or "licence not stated"
    return f"{text}, gated ({gated})" if gated else text


def _cmd_models_search(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.core.hub import Hub

    hub = Hub.from_settings(context.settings)
    query = " ".join(args.query)
    found = hub.search(query, limit=args.limit)
    if not found:
        print(f"No GGUF repositories on {hub.endpoint} match {query!r}.", file=sys.stderr)
        return 1
    _print_table(("REPOSITORY", "DOWNLOADS", "LIKES", "LICENCE"),
                 [(r.repo_id, f"{r.downloads:,}", f"{r.likes:,}", _licence_text(r.license, r.gated)) for r in found],
                 right=(1, 2))
    print("\nSee a repository's models with `parley models files REPOSITORY`.", file=sys.stderr)
    return 0


def _cmd_models_files(args: argparse.Namespace, context: Any) -> int:
    import textwrap

    from desktop_app.core.hub import Hub
    from desktop_app.core.hub_fit import format_bytes, repo_fit
    from desktop_app.core.memory_fit import available_memory, available_vram

    hub = Hub.from_settings(context.settings)
    details = hub.details(args.repo, revision=args.revision)
    print(f"{details.repo_id} at {details.revision[:12]}  {details.url}")
    licence = _licence_text(details.license, details.gated)
    print(f"Licence: {licence}" + (f" ({details.license_url})" if details.license_url else ""))
    if details.base_model:
        print(f"Base model: {', '.join(details.base_models)}")
    if details.summary:
        print()
        for paragraph in details.summary.split("\n\n"):
            print(textwrap.fill(paragraph, width=100))
    if details.gate_message:
        print()
        print(textwrap.fill(details.gate_message, width=100))
    if not details.models:
        why = (f"only incomplete split models ({', '.join(m.name for m in details.incomplete)})"
               if details.incomplete else "no GGUF model files")
        print(f"\n{details.repo_id} has {why}; Parley runs GGUF models. Find others with `parley models search`.",
              file=sys.stderr)
        return 1

    context_length = args.context or context.settings.get("model.context_length") or 4096
    ram, vram = available_memory(), available_vram()
    fit = repo_fit(hub, details, available_ram=ram, available_vram=vram, context_length=context_length)
    free = f"{format_bytes(ram)} of RAM" + (f" and {format_bytes(vram)} of VRAM" if vram else "")
    print(f"\nFit on this machine at {context_length:,} tokens of context ({free} free):")
    rows = [(model.name, format_bytes(model.size), str(len(model.parts)), model.first.path, fit.verdicts[model.name].text)
            for model in details.models]
    _print_table(("MODEL", "SIZE", "PARTS", "FILE", "FIT"), rows, right=(1, 2))
    if fit.note:
        print()
        print(textwrap.fill(f"The model's header could not be read, so only the weights are counted: {fit.note}", 100))
    for model in details.incomplete:
        missing = ", ".join(str(n) for n in model.extra.get("missing_parts", ()))
        print(f"Not offered: {model.name} is incomplete on the hub (part {missing} of "
              f"{model.extra.get('part_count')} missing).")
    if details.projectors:
        print("Vision projectors (not models of their own): " + ", ".join(f.path for f in details.projectors))
    print(f"\nDownload one with `parley models download {details.repo_id} FILE`.", file=sys.stderr)
    return 0


def _hub_model(hub: Any, repo: str, wanted: str, revision: str | None) -> Any:
    """The model ``wanted`` names in ``repo``: a file name (any part of a split model) or a quantisation."""
    from desktop_app.core.hub import HubError

    details = hub.details(repo, revision=revision)
    key = wanted.strip().lower().removesuffix(".gguf")

    def names(model: Any) -> set[str]:
        found = {model.name.lower()}
        for part in model.parts:
            found |= {part.path.lower().removesuffix(".gguf"), Path(part.path).name.lower().removesuffix(".gguf")}
        return found

    by_file = [m for m in details.models if key in names(m) - {m.name.lower()}]
    matches = by_file or [m for m in details.models if m.name.lower() == key]
    if len(matches) == 1:
        return matches[0]
    offered = ", ".join(f"{m.name} ({m.first.path})" for m in details.models) or "none"
    if matches:
        raise HubError(f"{wanted!r} names several models in {details.repo_id}: "
                       f"{', '.join(m.first.path for m in matches)}. Give the file name.")
    for model in details.incomplete:
        if key in names(model):
            missing = ", ".join(str(n) for n in model.extra.get("missing_parts", ()))
            raise HubError(f"{model.name} in {details.repo_id} is incomplete on the hub (part {missing} of "
                           f"{model.extra.get('part_count')} missing), so it could not be loaded; pick another. "
                           f"Its models: {offered}.")
    if any(f.path.lower().removesuffix(".gguf") == key or Path(f.path).name.lower().removesuffix(".gguf") == key
           for f in details.files):
        raise HubError(f"{wanted} in {details.repo_id} is not a GGUF model Parley can run. Its models: {offered}.")
    raise HubError(f"{details.repo_id} has no model {wanted!r}. Its models: {offered}. "
                   f"See them with `parley models files {details.repo_id}`.")


def _cmd_models_download(args: argparse.Namespace, context: Any) -> int:
    import threading

    from desktop_app.core.downloads import DownloadManager, DownloadState
    from desktop_app.core.hub import Hub
    from desktop_app.core.hub_fit import format_bytes

    hub = Hub.from_settings(context.settings)
    model = _hub_model(hub, args.repo, args.file, args.revision)
    present = context.models.find_downloaded(model.repo_id, model.first.path, model.first.sha256)
    if present is not None:
        print(f"{model.first.path} is already in the library as {present.name} ({present.path}).")
        return 0
    woke = threading.Event()
    manager = DownloadManager(context.paths, context.models, endpoint=hub.endpoint, token=hub.token,
                              max_parallel=1, on_change=lambda status: woke.set())
    bar = _DownloadProgress(sys.stdout)
    try:
        earlier = manager.find(model)
        status = manager.add(model)
        if earlier is not None and earlier.done_bytes and not earlier.finished:
            print(f"Resuming {status.label} from {format_bytes(earlier.done_bytes)} of "
                  f"{format_bytes(earlier.total_bytes)}.", file=sys.stderr)
        try:
            while not (status.finished or status.state == DownloadState.PAUSED):
                woke.wait(0.5)
                woke.clear()
                status = manager.status(status.id)
                bar.show(status)
            status = manager.wait(status.id)
        except KeyboardInterrupt:
            bar.end()
            print("Pausing…", file=sys.stderr, flush=True)
            manager.pause(status.id)
            status = manager.wait(status.id, timeout=30)
            print(f"Paused at {status.fraction:.0%} ({format_bytes(status.done_bytes)} of "
                  f"{format_bytes(status.total_bytes)}). The bytes downloaded are kept: run the same command again "
                  "to resume.", file=sys.stderr)
            return 1
        bar.end()
    finally:
        manager.close()
    if status.state == DownloadState.DONE:
        print(f"Downloaded {status.label}: it is in the library as {status.entry_name} ({status.path}), checked "
              f"against the hub's checksum. Chat with it: parley chat -m '{status.entry_name}'")
        return 0
    print(f"parley: {status.error or f'the download is {status.state.value}.'}", file=sys.stderr)
    return 1


class _DownloadProgress:
    """A download's progress on the terminal: one redrawn bar on a tty, plain lines otherwise."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._drawn = False
        self._last: tuple = ()

    def show(self, status: Any) -> None:
        from desktop_app.core.hub_fit import format_bytes

        done, total = format_bytes(status.done_bytes), format_bytes(status.total_bytes)
        speed = f"{format_bytes(int(status.speed))}/s" if status.speed else ""
        left = f"{_duration(status.eta)} left" if status.eta is not None else ""
        if self.tty:
            import shutil

            width = shutil.get_terminal_size((80, 24)).columns
            tail = "  ".join(t for t in (f"{status.fraction:6.1%}", f"{done} of {total}", speed, left,
                                         status.message or status.state.value) if t)
            room = max(10, min(40, width - len(tail) - len(status.label) - 6))
            filled = int(room * status.fraction)
            line = f"{status.label} [{'#' * filled}{'-' * (room - filled)}] {tail}"
            self.stream.write("\r" + line[:width - 1].ljust(width - 1))
            self._drawn = True
        else:
            # One line per tenth of the way, per state and per message: a log, not a flood.
            key = (status.state, int(status.fraction * 10), status.message)
            if key == self._last:
                return
            self._last = key
            parts = [status.label, status.state.value, f"{status.fraction:.0%}", f"{done} of {total}", speed, left,
                     status.message or ""]
            self.stream.write("  ".join(p for p in parts if p) + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _cmd_models_login(args: argparse.Namespace, context: Any) -> int:
    import getpass

    from desktop_app.core.hub import Hub, save_hub_token
    from desktop_app.core.hub_tokens import keyring_user

    hub = Hub.from_settings(context.settings)
    host = keyring_user(hub.endpoint)
    if sys.stdin.isatty():
        token = getpass.getpass(f"Access token for {host} (create one in your account's settings; "
                                "input is hidden): ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        print("parley: no token given; nothing was saved.", file=sys.stderr)
        return 1
    account = Hub(hub.endpoint, token).whoami()  # a refused token stops here, unsaved
    save_hub_token(hub.endpoint, token)
    if account:
        print(f"Saved the token for {host} (account {account}) in the system keyring.")
    else:
        print(f"Saved the token for {host} in the system keyring; this hub does not say whose a token is, "
              "so it was not checked.")
    return 0


def _cmd_models_logout(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.core.hub import Hub, forget_hub_token
    from desktop_app.core.hub_tokens import keyring_user

    hub = Hub.from_settings(context.settings)
    if forget_hub_token(hub.endpoint):
        print(f"Forgot the token for {keyring_user(hub.endpoint)}.")
    else:
        print(f"No token was saved for {keyring_user(hub.endpoint)}.")
    return 0


# -- plugins ---------------------------------------------------------------------------------
def _cmd_plugins_list(args: argparse.Namespace, context: Any) -> int:
    records = list(context.plugins.records.values())
    if not records:
        print("No plugins installed.")
    for r in records:
        version = f" {r.version}" if r.version else ""
        print(f"{r.name}{version}\t{r.source}\t{r.status}" + (f"\t{r.error}" if r.error else ""))
    return 0


def _cmd_plugins_toggle(args: argparse.Namespace, context: Any) -> int:
    context.plugins.set_enabled(args.name, args.enable)
    context.settings.set("plugins.disabled", sorted(context.plugins.disabled))
    context.settings.save()
    print(f"{args.name} {'enabled' if args.enable else 'disabled'}.")
    return 0


def _cmd_plugins_install(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.plugin_install import PluginInstaller, mark_enabled

    if not args.trust and not sys.stdin.isatty():
        print("parley: a plugin is code that runs with your full rights, so installing one needs your explicit "
              "trust, and there is no terminal to ask. Run the command in a terminal, or add --trust if you "
              "trust this code. Nothing was installed.", file=sys.stderr)
        return 1
    pip_args = (["--no-index"] if args.no_index else []) + [a for d in args.find_links for a in ("--find-links", d)]
    if args.index_url:
        pip_args += ["--index-url", args.index_url]
    installer = PluginInstaller(context.paths.plugins_dir, pip_args=pip_args)
    candidate = installer.prepare(args.target, progress=_print_step)
    try:
        print(candidate.summary_text())
        if not args.trust:
            sys.stderr.write("\nDo you trust this code? Type yes to install and enable it: ")
            sys.stderr.flush()
            try:
                answer = input()
            except EOFError:
                answer = ""
            if answer.strip().lower() != "yes":
                print("Not installed.", file=sys.stderr)
                return 1
        names = installer.install(candidate, trusted=True, progress=_print_step)
    finally:
        candidate.close()
    mark_enabled(context.settings, names, context.plugins)
    print(f"Installed and enabled {', '.join(names)}; Parley loads it the next time it starts.")
    return 0


def _cmd_plugins_remove(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.plugin_install import PluginInstaller

    print(PluginInstaller(context.paths.plugins_dir).remove(args.name, progress=_print_step))
    return 0


def _cmd_plugins_new(args: argparse.Namespace, context: Any) -> int:
    from desktop_app.plugin_scaffold import write_plugin_package

    folder = write_plugin_package(args.name, Path(args.folder))
    print(f"Wrote the plugin {args.name} in {folder}. Next:\n"
          f"  cd {folder}\n"
          f"  {sys.executable} -m pytest tests   # its tests\n"
          f"  parley plugins install .        # install it into Parley")
    return 0


def _print_step(step: str, line: str | None) -> None:
    """Install progress on the terminal: each step once (pip's own lines only when it fails)."""
    if line is None:
        print(step, file=sys.stderr)


# -- conversations ---------------------------------------------------------------------------
def _cmd_conv_list(args: argparse.Namespace, context: Any) -> int:
    import time

    for c in context.store.list_conversations():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated))
        print(f"{c.id}\t{when}\t{c.title}")
    return 0


def _cmd_conv_show(args: argparse.Namespace, context: Any) -> int:
    sys.stdout.write(context.store.export_markdown(args.id))
    return 0


def _cmd_conv_export(args: argparse.Namespace, context: Any) -> int:
    if args.format == "json":
        text = json.dumps(context.store.export_json(args.id), indent=2, ensure_ascii=False) + "\n"
    else:
        text = context.store.export_markdown(args.id)
    if args.output:
        from desktop_app.core.paths import atomic_write_text

        atomic_write_text(Path(args.output), text)
        print(f"Wrote {args.output}.", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_conv_import(args: argparse.Namespace, context: Any) -> int:
    try:
        data = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.file} is not valid JSON ({exc}).") from None
    conversation = context.store.import_json(data)
    print(f"Imported as conversation {conversation.id}: {conversation.title}")
    return 0


def _cmd_conv_search(args: argparse.Namespace, context: Any) -> int:
    hits = context.store.search(" ".join(args.query))
    if not hits:
        print("No matches.", file=sys.stderr)
        return 1
    for hit in hits:
        print(f"{hit.conversation_id}\t{hit.conversation_title}\t{hit.role}: {hit.snippet}")
    return 0


def _cmd_conv_rename(args: argparse.Namespace, context: Any) -> int:
    context.store.rename_conversation(args.id, args.title)
    return 0


def _cmd_conv_delete(args: argparse.Namespace, context: Any) -> int:
    context.store.delete_conversation(args.id)
    print(f"Deleted conversation {args.id}.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
