"""The built-in plugins may import only the plugin API: the import-linter contract must name every
other module of Parley, so a new module cannot slip past it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"desktop_app", "desktop_app.api", "desktop_app.ui", "desktop_app.ui.api", "desktop_app.__main__"}


def contract(name: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return next(c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == name)


def parley_modules() -> set[str]:
    found = set()
    for path in (ROOT / "desktop_app").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_module_but_the_plugin_api_is_forbidden_to_built_in_plugins():
    forbidden = contract("built-in plugins use the plugin API, not Parley's internals")["forbidden_modules"]

    def covered(module: str) -> bool:
        return any(module == f or module.startswith(f + ".") for f in forbidden)

    missing = sorted(m for m in parley_modules() - ALLOWED if not covered(m))
    assert not missing, f"add these to the contract (or to the plugin API): {missing}"


def test_the_contract_covers_every_built_in_plugin():
    from desktop_app.plugins import DEFAULT_PLUGINS

    sources = contract("built-in plugins use the plugin API, not Parley's internals")["source_modules"]
    assert sorted(sources) == sorted(DEFAULT_PLUGINS)
