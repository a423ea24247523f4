"""`parley lora list|add|remove|info|apply|convert|train|search|download` and `parley chat --lora NAME=SCALE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["parse_spec", "register"]


def parse_spec(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME=SCALE`` (scale 0–2) as ``{"name", "scale"}``."""
    from desktop_app_lora.library import MAX_SCALE

    name, sep, value = text.rpartition("=")
    if not sep:
        return {"name": text.strip(), "scale": 1.0}
    try:
        scale = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the scale after '=' must be a number from 0 to {MAX_SCALE:g}.")
    if not 0 <= scale <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"{text!r}: the scale must be from 0 to {MAX_SCALE:g}.")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: name the adapter before '='.")
    return {"name": name.strip(), "scale": scale}


class _LoraOption(argparse.Action):
    """Collects --lora into ``args.plugin_options["lora"]["adapters"]`` ("none" clears)."""

    def __call__(self, parser, namespace, value, option_string=None):
        options = getattr(namespace, "plugin_options", None) or {}
        adapters = options.setdefault("lora", {}).setdefault("adapters", [])
        if value.strip().lower() != "none":
            try:
                adapters.append(parse_spec(value))
            except argparse.ArgumentTypeError as exc:
                parser.error(str(exc))
        namespace.plugin_options = options


def register(subparsers) -> None:
    """Add the commands."""
    chat = subparsers.choices.get("chat")
    if chat is not None:
        chat.add_argument("--lora", action=_LoraOption, metavar="NAME[=SCALE]",
                          help="answer with this LoRA adapter at this scale (0-2, default 1; repeatable; "
                               "'none' for no adapters); remembered for the conversation")
    lora = subparsers.add_parser("lora", help="LoRA adapters: list, add, apply, convert, train").add_subparsers(
        title="actions", metavar="ACTION", required=True)
    p = lora.add_parser("list", help="list adapters, and whether they fit the model")
    p.add_argument("-m", "--model", help="check against this model (default: the configured one)")
    p.set_defaults(handler=_list)
    p = lora.add_parser("add", help="copy a GGUF LoRA adapter into the library")
    p.add_argument("path")
    p.add_argument("--name")
    p.set_defaults(handler=_add)
    p = lora.add_parser("remove", help="remove an adapter from the library (its copy is deleted)")
    p.add_argument("name")
    p.set_defaults(handler=_remove)
    p = lora.add_parser("info", help="an adapter's metadata, and whether it fits the model")
    p.add_argument("name", help="a name from the library, or a GGUF file")
    p.add_argument("-m", "--model", help="check against this model (default: the configured one)")
    p.set_defaults(handler=_info)
    p = lora.add_parser("apply", help="choose the adapters (and scales) a conversation, or new ones, use")
    p.add_argument("adapters", nargs="*", type=parse_spec, metavar="NAME[=SCALE]",
                   help="adapters to use, scale 0-2 (default 1); replaces the previous choice")
    p.add_argument("-c", "--conversation", type=int, help="for this conversation (default: new conversations)")
    p.add_argument("--none", action="store_true", help="use no adapters")
    p.add_argument("-m", "--model", help="check against this model (default: the configured one)")
    p.set_defaults(handler=_apply)
    p = lora.add_parser("convert", help="convert a PEFT adapter folder to GGUF and add it")
    p.add_argument("folder", help="folder with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--name")
    p.add_argument("-m", "--model", help="the base model it is for (default: the configured one)")
    p.add_argument("--outtype", choices=("f16", "f32"), default="f16")
    p.add_argument("-o", "--output", help="write the GGUF file here instead of adding it to the library")
    p.set_defaults(handler=_convert)
    p = lora.add_parser("train", help="train an adapter on examples (Ctrl+C cancels)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a JSONL file of chats ({\"messages\": [...]} or prompt/completion per line)")
    source.add_argument("--conversation", type=int, help="learn the answers of this conversation")
    p.add_argument("--answers", help="with --conversation: only these answer ids (comma-separated)")
    p.add_argument("--name", required=True)
    p.add_argument("-m", "--model", help="the base model (default: the configured one)")
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--targets", help="comma-separated: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--epochs", type=int, help="passes over the examples (default: automatic)")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--max-length", type=int, dest="max_length")
    p.add_argument("--system", help="system prompt for examples without one (default: the app's)")
    p.add_argument("--apply", action="store_true",
                   help="use it in new conversations (and in the conversation it learned from)")
    p.set_defaults(handler=_train)
    where = ("The hub is huggingface.co, or the hub.endpoint setting (settings.toml), or the HF_ENDPOINT "
             "environment variable.")
    p = lora.add_parser("search", help="find LoRA adapters on the model hub for the model, and whether they fit",
                        description="Adapters are found by the model's family name (or QUERY) and by the hub's "
                                    "base-model tags; each is checked against the model from its metadata, "
                                    "before any download. " + where)
    p.add_argument("query", nargs="?", help="words in the adapters' names, or a base model's owner/name "
                                            "(default: the model's family name)")
    p.add_argument("-m", "--model", help="check against this model (default: the configured one)")
    p.add_argument("--limit", type=int, default=20, help="repositories to look at (default 20)")
    p.set_defaults(handler=_search)
    p = lora.add_parser("download", help="download a LoRA adapter from the hub and add it (a PEFT one is converted)",
                        description="Refused before downloading when the adapter does not fit the model. "
                                    "Ctrl+C cancels. " + where)
    p.add_argument("repo", help="the repository, owner/name")
    p.add_argument("file", nargs="?", help="the GGUF file or PEFT folder in it, when it holds several adapters")
    p.add_argument("--name", help="the adapter's name in the library")
    p.add_argument("-m", "--model", help="the model it is for (default: the configured one)")
    p.set_defaults(handler=_download)


def _state(context):
    from desktop_app_lora import state

    if state.context is not context:
        state.start(context)
    return state


def _model(context, args) -> Path:
    return context.model_file(getattr(args, "model", None))


def _list(args, context) -> int:
    state = _state(context)
    entries = state.library.entries()
    if not entries:
        print("No adapters yet. Add one with: parley lora add FILE.gguf "
              "(or convert a PEFT folder, or train one).")
        return 0
    model = _model(context, args)
    defaults = {c.name: c.scale for c in state.library.defaults()}
    for entry in entries:
        info = entry.info or {}
        rank, alpha = info.get("rank", "?"), info.get("alpha", 0.0)
        targets = ",".join(info.get("targets", []))
        problem = state.fits(entry.name, model)
        mark = f"*{defaults[entry.name]:g}" if entry.name in defaults else "  "
        fit = "fits" if problem is None else "does not fit"
        print(f"{mark} {entry.name}\trank {rank}, alpha {alpha:g}, {targets}\t"
              f"{info.get('file_size', 0) / 1e6:.1f} MB\t{fit} {model.name}")
    if defaults:
        print("(* used by new conversations, at that scale)")
    return 0


def _add(args, context) -> int:
    entry = _state(context).library.add(args.path, name=args.name)
    print(f"Added {entry.name}.")
    return 0


def _remove(args, context) -> int:
    entry = _state(context).library.remove(args.name)
    print(f"Removed {entry.name}.")
    return 0


def _info(args, context) -> int:
    from desktop_app_lora.adapters import AdapterError, check_compatible, read_adapter_info

    state = _state(context)
    entry = state.library.find(args.name)
    if entry is None and not Path(args.name).expanduser().exists():
        state.library.get(args.name)  # says which adapters there are
    info = read_adapter_info(state.library.path(entry) if entry else Path(args.name).expanduser())
    data = info.summary()
    data["ranks"] = "/".join(map(str, info.ranks))
    data.pop("rank")
    data["file_size"] = f"{info.file_size / 1e6:.2f} MB"
    data["targets"] = ", ".join(info.targets)
    if entry is not None:
        data["source"] = entry.source
    model = _model(context, args)
    try:
        check_compatible(info, model)
        data["fits"] = f"yes, {model.name}"
    except AdapterError as exc:
        data["fits"] = f"no: {exc}"
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def _apply(args, context) -> int:
    from desktop_app_lora.adapters import AdapterError
    from desktop_app_lora.library import Choice

    state = _state(context)
    if args.none == bool(args.adapters):
        raise ValueError("Name the adapters to use (NAME or NAME=SCALE), or pass --none.")
    if args.conversation is not None:
        context.conversations.get(args.conversation)  # a clear error for a wrong id
    choices = [Choice(a["name"], a["scale"]) for a in args.adapters]
    model = _model(context, args)
    for choice in choices:
        state.library.get(choice.name)
        problem = state.fits(choice.name, model)
        if problem:
            raise AdapterError(problem)
    state.remember(args.conversation, choices)
    who = f"Conversation {args.conversation} now uses" if args.conversation is not None else "New conversations now use"
    used = ", ".join(f"{c.name} ×{c.scale:g}" for c in choices) or "no adapters"
    print(f"{who} {used}.")
    return 0


def _convert(args, context) -> int:
    import tempfile

    from desktop_app_lora.convert import convert_peft_adapter

    state = _state(context)
    folder = Path(args.folder).expanduser()
    model = _model(context, args)
    name = args.name or folder.name
    if args.output:
        info = convert_peft_adapter(folder, Path(args.output), model, name=name, outtype=args.outtype)
        print(f"Wrote {args.output}: {info.describe()}")
        return 0
    with tempfile.TemporaryDirectory(prefix="parley-convert-") as tmp:
        out = Path(tmp) / "adapter.gguf"
        info = convert_peft_adapter(folder, out, model, name=name, outtype=args.outtype)
        entry = state.library.add(out, name=name, move=True, source=f"converted from {folder}")
    print(f"Added {entry.name}: {info.describe()}")
    return 0


def _train(args, context) -> int:
    import signal
    import threading

    from desktop_app_lora.data import examples_from_conversation, load_jsonl, with_system_prompt
    from desktop_app_lora.library import Choice
    from desktop_app_lora.train import TrainingCancelled, train_adapter

    state = _state(context)
    model = _model(context, args)
    if args.data:
        chats = load_jsonl(args.data)
        system = args.system or state.system_prompt_for(model)
    else:
        ids = None
        if args.answers:
            try:
                ids = [int(x) for x in args.answers.split(",") if x.strip()]
            except ValueError:
                raise ValueError("--answers takes message ids separated by commas, e.g. 12,15.") from None
        chats = examples_from_conversation(context.conversations, args.conversation, ids)
        conversation = context.conversations.get(args.conversation)
        system = args.system or conversation.system_prompt or state.system_prompt_for(model)
    chats = with_system_prompt(chats, system)
    config = config_from_settings(state)
    for key in ("rank", "alpha", "learning_rate", "epochs", "batch_size", "max_length"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    if args.targets:
        config.target_modules = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    config.validate()
    if state.library.find(args.name):
        raise ValueError(f"There already is an adapter called {args.name!r}; pick another name.")

    def show(p) -> None:
        loss = f" · loss {p.loss:.4f}" if p.loss is not None else ""
        eta = f" · about {p.eta:.0f} s left" if p.eta else ""
        sys.stderr.write(f"\r{p.message}{loss}{eta}\033[K")
        sys.stderr.flush()

    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    print(f"Training {args.name} on {len(chats)} examples with {model.name} "
          f"(rank {config.rank}, alpha {config.alpha:g}, {config.epochs_for(len(chats))} epochs)…",
          file=sys.stderr)
    try:
        entry, result = train_adapter(model, chats, state.library, args.name, config, progress=show,
                                      cancel=cancel, work_dir=context.cache_dir)
    except TrainingCancelled as exc:
        sys.stderr.write("\n")
        print(f"parley: {exc}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stderr.write("\n")
    print(f"Added {entry.name}: {result.steps} steps on {result.device}, final loss {result.final_loss:.4f}, "
          f"{result.seconds:.0f} s.")
    if args.apply:
        targets = [None] + ([args.conversation] if args.conversation is not None else [])
        for conversation_id in targets:
            choices, _ = state.choices_for(conversation_id)
            choices = [c for c in choices if c.name != entry.name] + [Choice(entry.name, 1.0)]
            state.remember(conversation_id, choices)
        print("It is used by new conversations" + (" and by that conversation." if args.conversation else "."))
    return 0


def _search(args, context) -> int:
    from desktop_app_lora.hub_search import find_adapters

    model = _model(context, args)
    hub = context.hub()
    found = find_adapters(hub, model, args.query, limit=max(1, args.limit),
                          progress=lambda text: print(text, file=sys.stderr))
    what = f"matching {args.query!r}" if args.query else "for it"
    if not found:
        print(f"No LoRA adapters {what} on {hub.endpoint}. Try other words, or a base model's owner/name.",
              file=sys.stderr)
        return 1
    print(f"LoRA adapters {what} on {hub.endpoint}, checked against {model.name}:")
    for candidate in found:
        verdict = candidate.compatibility
        kind = "GGUF" if candidate.kind == "gguf" else "PEFT"
        print(f"\n{verdict.label:<20} {candidate.label}  ({kind}, {candidate.size / 1e6:.1f} MB, "
              f"{candidate.downloads:,} downloads)")
        print(f"{'':<20} {verdict.reason}")
    print("\nDownload one with `parley lora download REPOSITORY [FILE]`.", file=sys.stderr)
    return 0


def _download(args, context) -> int:
    import signal
    import threading

    from desktop_app_lora.hub_download import DownloadCancelled, download_adapter, find_in_repo

    state = _state(context)
    model = _model(context, args)
    hub = context.hub()
    candidate = find_in_repo(hub, args.repo, args.file, model)
    if candidate.compatibility.usable:  # a misfit's reason is the error download_adapter raises
        print(f"{candidate.label}: {candidate.compatibility.label.lower()}. {candidate.compatibility.reason}",
              file=sys.stderr)

    def show(p) -> None:
        percent = f" {100 * p.done / p.total:3.0f}%" if p.total else ""
        sys.stderr.write(f"\r{p.message}{percent} ({p.done / 1e6:.1f} of {p.total / 1e6:.1f} MB)\033[K")
        sys.stderr.flush()

    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        entry = download_adapter(context.downloads, candidate, state.library, model, name=args.name,
                                 progress=show, cancel=cancel)
    except DownloadCancelled as exc:
        print(f"\nparley: {exc}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stderr.write("\n")
    info = entry.info or {}
    print(f"Added {entry.name}: rank {info.get('rank', '?')}, {', '.join(info.get('targets', []))}, "
          f"{info.get('file_size', 0) / 1e6:.1f} MB. Use it with `parley lora apply {entry.name}`.")
    return 0


def config_from_settings(state) -> Any:
    """A TrainConfig from the plugin's settings."""
    from desktop_app_lora.train import TrainConfig

    settings = state.context.settings
    targets = tuple(t.strip() for t in str(settings.get("target_modules")).split(",") if t.strip())
    return TrainConfig(
        rank=int(settings.get("rank")), alpha=float(settings.get("alpha")),
        learning_rate=float(settings.get("learning_rate")), epochs=int(settings.get("epochs")),
        batch_size=int(settings.get("batch_size")), max_length=int(settings.get("max_length")),
        target_modules=targets or TrainConfig().target_modules,
    )
