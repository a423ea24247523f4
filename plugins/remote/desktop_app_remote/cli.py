"""`parley engines`: add, list, check and remove remote engines from the command line."""

from __future__ import annotations

import os
import sys

__all__ = ["register"]


def register(subparsers) -> None:
    """Add `parley engines ...`."""
    engines = subparsers.add_parser("engines", help="model servers on other machines (llama-server, vLLM, "
                                    "Ollama, LM Studio, another Parley)").add_subparsers(
        title="actions", metavar="ACTION", required=True)
    p = engines.add_parser("add", help="add an OpenAI-compatible server; its models join the model picker")
    p.add_argument("name", help="a short name, e.g. gpu-box")
    p.add_argument("url", help="the server's address, e.g. http://gpu-box:8080")
    p.add_argument("--api-key-env", metavar="VAR", help="read the server's API key from this environment "
                   "variable (it is kept in the system keyring, never in Parley's files)")
    p.add_argument("--replace", action="store_true", help="change an engine of that name")
    p.add_argument("--no-check", action="store_true", help="do not ask the server what it serves now")
    p.set_defaults(handler=add_engine)
    engines.add_parser("list", help="list the engines and their models").set_defaults(handler=list_engines)
    p = engines.add_parser("check", help="ask engines what they serve now")
    p.add_argument("name", nargs="?", help="one engine (default: all)")
    p.set_defaults(handler=check_engines)
    p = engines.add_parser("remove", help="forget an engine and its key")
    p.add_argument("name")
    p.set_defaults(handler=remove_engine)


def _state():
    from desktop_app_remote import state

    for warning in state.store.warnings:
        print(f"parley: warning: {warning}", file=sys.stderr)
    return state


def add_engine(args, context) -> int:
    """Handle `parley engines add`."""
    from desktop_app_remote.engines import EngineError, add_engine as add

    state = _state()
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise EngineError(f"The environment variable {args.api_key_env} is not set (or empty): set it to "
                              "the server's API key and run this again.")
    config = add(state.store, args.name, args.url, key, replace=args.replace)
    print(f"Added {config.name} at {config.url}{' (API key in the system keyring)' if config.has_key else ''}.")
    if args.no_check:
        return 0
    return _check(state, args.name)


def _check(state, name: str) -> int:
    from desktop_app_remote.client import RemoteError

    try:
        checked = state.current_backend().check(name)
    except RemoteError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    models = ", ".join(m.id for m in checked.models) or "no models"
    print(f"{checked.name} is {checked.kind} and serves: {models}.")
    return 0


def list_engines(args, context) -> int:
    """Handle `parley engines list`."""
    engines = _state().store.all()
    if not engines:
        print("No remote engines yet: parley engines add NAME URL")
    for e in engines:
        models = ", ".join(m.id for m in e.models) or "-"
        status = e.problem or (e.kind if e.checked else "not checked")
        print(f"{e.name}\t{e.url}\t{'key' if e.has_key else 'no key'}\t{status}\t{models}")
    return 0


def check_engines(args, context) -> int:
    """Handle `parley engines check`."""
    state = _state()
    names = [args.name] if args.name else [e.name for e in state.store.all()]
    return max([_check(state, name) for name in names] or [0])


def remove_engine(args, context) -> int:
    """Handle `parley engines remove`."""
    from desktop_app_remote.engines import remove_engine as remove

    config = remove(_state().store, args.name)
    print(f"Removed {config.name} ({config.url}).")
    return 0
