"""`parley serve`: the API server in the foreground, until Ctrl+C."""

from __future__ import annotations

import sys
import threading

__all__ = ["register"]


def register(subparsers) -> None:
    """Add `parley serve` and `parley profiles ...`."""
    profiles = subparsers.add_parser("profiles", help="setups of conversations the API serves as profile:NAME") \
        .add_subparsers(title="actions", metavar="ACTION", required=True)
    p = profiles.add_parser("save", help="save a conversation's setup (template, documents, adapters, tools, "
                            "system prompt, model) as a profile")
    p.add_argument("name")
    p.add_argument("-c", "--conversation", type=int, required=True, help="the conversation's id")
    p.add_argument("--store", action="store_true", help="keep each request to this profile as a conversation")
    p.add_argument("--replace", action="store_true", help="replace a profile of that name")
    p.set_defaults(handler=save_profile)
    profiles.add_parser("list", help="list the profiles").set_defaults(handler=list_profiles)
    p = profiles.add_parser("show", help="show what a profile brings")
    p.add_argument("name")
    p.set_defaults(handler=show_profile)
    p = profiles.add_parser("delete", help="delete a profile")
    p.add_argument("name")
    p.set_defaults(handler=delete_profile)

    p = subparsers.add_parser("serve", help="serve the model through an OpenAI-compatible API")
    p.add_argument("--host", help="address to listen on (default: the setting, 127.0.0.1); "
                   "beyond loopback the API key is required")
    p.add_argument("--port", type=int, help="port (default: the setting, 8080; 0 = any free port)")
    p.add_argument("--model", help="model to load, by library name or path (default: the configured one)")
    p.add_argument("--rotate-key", action="store_true", help="make a new API key (shown once; the old one stops working)")
    p.add_argument("--remove-key", action="store_true", help="forget the API key (only for 127.0.0.1 without "
                   "the api_key_required setting)")
    p.set_defaults(handler=serve)


def _profiles(context):
    from desktop_app_server.profiles import ProfileStore

    store = ProfileStore.of(context)
    for warning in store.warnings:
        print(f"parley: warning: {warning}", file=sys.stderr)
    return store


def save_profile(args, context) -> int:
    """Handle `parley profiles save`."""
    from desktop_app_server.profiles import profile_from_conversation

    profile = profile_from_conversation(context, args.name, args.conversation, store_conversations=args.store)
    _profiles(context).save(profile, replace=args.replace)
    print(f"Saved {profile.describe()}")
    return 0


def list_profiles(args, context) -> int:
    """Handle `parley profiles list`."""
    profiles = _profiles(context).all()
    if not profiles:
        print("No profiles yet: parley profiles save NAME -c CONVERSATION_ID")
    for profile in profiles:
        print(f"{profile.model_id}\t{profile.model or 'loaded model'}\t{', '.join(sorted(profile.plugins)) or '-'}")
    return 0


def show_profile(args, context) -> int:
    """Handle `parley profiles show`."""
    print(_profiles(context).get(args.name).describe())
    return 0


def delete_profile(args, context) -> int:
    """Handle `parley profiles delete`."""
    print(f"Deleted {_profiles(context).delete(args.name).model_id}.")
    return 0


def serve(args, context) -> int:
    """Handle `parley serve`."""
    from desktop_app_server import state
    from desktop_app_server.controller import ServerError, config_from_settings

    controller = state.controller
    config = config_from_settings(context, args.host, args.port)
    if args.remove_key:
        if config.key_required:
            print("parley: the key cannot be removed: serving on "
                  f"{config.host} (or with api_key_required) needs one.", file=sys.stderr)
            return 1
        print("API key removed." if controller.keys.remove() else "There was no API key.")
    if args.rotate_key or (config.key_required and not controller.keys.exists):
        key = controller.keys.create()
        print("New API key (shown only now; keep it somewhere safe):")
        print(f"  {key}")
        print("Clients send it as 'Authorization: Bearer KEY' (the openai client: api_key=KEY).")
    for warning in context.load_model(args.model):
        print(f"parley: warning: {warning}", file=sys.stderr)
    try:
        url = controller.start(config=config)
    except ServerError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    model = context.model.path.name if context.model.path else "no model"
    key = "API key required" if controller.gateway.config.key_required else "no API key"
    print(f"Parley API server on {url} ({model}; {key}). OpenAI base URL: {url}/v1 — Ctrl+C stops it.", flush=True)
    done = threading.Event()
    try:
        while not done.wait(0.5):
            if not controller.is_running:
                print(f"parley: the server stopped: {controller.status['error'] or 'unknown reason'}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("\nStopping…", file=sys.stderr)
    finally:
        controller.stop()
    return 0
