"""`parley docs add|list|index|search|remove|rename|skipped` and `parley chat --docs NAME`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


class _DocsOption(argparse.Action):
    """Collects --docs into ``args.plugin_options["local_docs"]["collections"]``."""

    def __call__(self, parser, namespace, value, option_string=None):
        options = getattr(namespace, "plugin_options", None) or {}
        options.setdefault("local_docs", {}).setdefault("collections", []).append(value)
        namespace.plugin_options = options


def register(subparsers) -> None:
    """Add the commands."""
    chat = subparsers.choices.get("chat")
    if chat is not None:
        chat.add_argument("--docs", action=_DocsOption, metavar="COLLECTION",
                          help="answer from this document collection, with sources (repeatable)")
    docs = subparsers.add_parser("docs", help="your document collections").add_subparsers(
        title="actions", metavar="ACTION", required=True)
    p = docs.add_parser("add", help="create a collection or add folders and files to it, then index it")
    p.add_argument("name")
    p.add_argument("paths", nargs="*", metavar="FOLDER",
                   help="folders and files to index (none with --server: only search what others indexed)")
    p.add_argument("--server", metavar="URL",
                   help="keep the collection on this Chroma server (chroma run), shared with every Parley "
                        "that adds the same name there, e.g. http://127.0.0.1:8000")
    p.add_argument("--no-index", action="store_true", help="only record the folders")
    p.set_defaults(handler=_add)
    p = docs.add_parser("list", help="list collections")
    p.set_defaults(handler=_list)
    p = docs.add_parser("index", help="bring a collection's index up to date (only changed files)")
    p.add_argument("name")
    p.set_defaults(handler=_index)
    p = docs.add_parser("search", help="search a collection")
    p.add_argument("name")
    p.add_argument("query", nargs="+")
    p.add_argument("-k", type=int, default=5)
    p.set_defaults(handler=_search)
    p = docs.add_parser("skipped", help="files a collection skipped, and why")
    p.add_argument("name")
    p.set_defaults(handler=_skipped)
    p = docs.add_parser("rename", help="rename a collection")
    p.add_argument("name")
    p.add_argument("new_name")
    p.set_defaults(handler=_rename)
    p = docs.add_parser("remove", help="forget a collection (your files are not touched)")
    p.add_argument("name")
    p.add_argument("--on-server", action="store_true",
                   help="a shared collection: delete it on its server too, for everyone")
    p.set_defaults(handler=_remove)


def _index_of():
    from desktop_app_local_docs import state

    return state.index


def _print_progress(p) -> None:
    eta = f", about {p.eta:.0f} s left" if p.eta else ""
    sys.stderr.write(f"\r{p.files_done}/{p.files_total} files, {p.chunks} chunks, {p.rate:.0f} chunks/s{eta}   ")
    sys.stderr.flush()


def _run_index(name: str) -> int:
    import signal
    import threading

    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        report = _index_of().index(name, progress=_print_progress, cancel=cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stderr.write("\n")
    state = "stopped (run it again to continue)" if report.cancelled else "done"
    print(f"{name}: {state} — {report.indexed} indexed, {report.unchanged} unchanged, "
          f"{len(report.skipped)} skipped, {report.removed} removed, {report.chunks} chunks in {report.seconds:.1f} s")
    for path, reason in report.skipped.items():
        print(f"  skipped {path}: {reason}")
    return 130 if report.cancelled else 0


def _add(args, context) -> int:
    if not args.paths and not args.server:
        print("parley: give at least one folder (or --server URL to use a shared collection).", file=sys.stderr)
        return 2
    _index_of().add_collection(args.name, args.paths, server=args.server)
    if args.server:
        print(f"{args.name} is on {args.server}, shared with every Parley that adds it there.")
    return 0 if args.no_index else _run_index(args.name)


def _list(args, context) -> int:
    from desktop_app_local_docs.index import DocsError

    index = _index_of()
    collections = index.collections()
    if not collections:
        print("No collections yet. Add one with: parley docs add NAME FOLDER")
    stale = {}
    for name, info in collections.items():
        if info["server"]:
            try:
                index.sync(name)  # counts as the server has them now
            except DocsError as exc:
                stale[name] = str(exc)
    for name, info in index.collections().items():
        where = f"\tshared on {info['server']}" if info["server"] else ""
        incomplete = f", {info['incomplete']} incomplete" if info["incomplete"] else ""
        print(f"{name}\t{info['files']} files, {info['chunks']} chunks, {info['skipped']} skipped{incomplete}"
              f"{where}\t" + ", ".join(info["paths"]))
        if name in stale:
            print(f"  (counts as of the last sync: {stale[name]})")
    return 0


def _index(args, context) -> int:
    return _run_index(args.name)


def _search(args, context) -> int:
    hits = _index_of().search([args.name], " ".join(args.query), k=args.k)
    if not hits:
        print("Nothing relevant found.", file=sys.stderr)
        return 1
    for i, hit in enumerate(hits, 1):
        where = hit.path + (f", page {hit.page}" if hit.page else "") + (f" — {hit.heading}" if hit.heading else "")
        snippet = " ".join(hit.text.split())[:200]
        print(f"[{i}] {where}  (score {hit.score:.4f})\n    {snippet}")
    return 0


def _skipped(args, context) -> int:
    for path, reason in _index_of().skipped(args.name).items():
        print(f"{path}\t{reason}")
    return 0


def _rename(args, context) -> int:
    _index_of().rename_collection(args.name, args.new_name)
    return 0


def _remove(args, context) -> int:
    index = _index_of()
    shared = index.collections().get(args.name, {}).get("server")
    index.remove_collection(args.name, on_server=args.on_server)
    if shared and not args.on_server:
        print(f"Removed {args.name} here; it stays on {shared} for the others (--on-server deletes it there).")
    else:
        print(f"Removed {args.name}; your files were not touched.")
    return 0
