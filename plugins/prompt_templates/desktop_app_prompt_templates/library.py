"""The template library: built-in templates, the user's own files, and other plugins' templates.

User templates are TOML files in the data folder's ``templates/``; each is written
atomically. A broken file is reported (file and line) and skipped; the other templates
still load. When two templates share a name, the later one is shown as "name (origin)",
so nothing is hidden and every template's origin is visible.
"""

from __future__ import annotations

import re
from pathlib import Path

from desktop_app.api import atomic_write_text

from desktop_app_prompt_templates.templates import PromptTemplate, TemplateError, dump_template, load_template

__all__ = ["TemplateLibrary", "BUILTIN_DIR"]

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"


def builtin_templates() -> tuple[list[PromptTemplate], list[str]]:
    """Read the templates that ship with the plugin."""
    return _read_folder(BUILTIN_DIR, "built-in")


def _read_folder(folder: Path, origin: str) -> tuple[list[PromptTemplate], list[str]]:
    found, errors = [], []
    if folder.is_dir():
        for path in sorted(folder.glob("*.toml")):
            try:
                found.append(load_template(path, origin))
            except TemplateError as exc:
                errors.append(str(exc))
    return found, errors


class TemplateLibrary:
    """All templates by name. ``errors`` lists files that could not be used, with why."""

    def __init__(self, user_dir: Path):
        self.user_dir = user_dir
        self.templates: dict[str, PromptTemplate] = {}
        self.errors: list[str] = []
        self._registered: list[PromptTemplate] = []

    def load(self, registered: list[PromptTemplate]) -> "TemplateLibrary":
        """(Re)build the library from registered templates (built-ins first) and the user's files."""
        self._registered = list(registered)
        self.templates = {}
        self.errors = []
        for template in self._registered:
            self._add(template)
        users, errors = _read_folder(self.user_dir, "user")
        self.errors += errors
        for template in users:
            self._add(template)
        return self

    def _add(self, template: PromptTemplate) -> None:
        name = template.name
        if name in self.templates:
            name = f"{template.name} ({template.origin})"
            n = 2
            while name in self.templates:
                name, n = f"{template.name} ({template.origin} {n})", n + 1
            template.name = name
        self.templates[name] = template

    def names(self) -> list[str]:
        """Template names, in library order (built-ins first)."""
        return list(self.templates)

    def get(self, name: str) -> PromptTemplate:
        """Return a template or raise TemplateError listing what exists."""
        try:
            return self.templates[name]
        except KeyError:
            raise TemplateError(f"There is no template called {name!r}. Templates: {', '.join(self.names())}.") from None

    # -- editing (the user's own files) -----------------------------------------------------
    def _user_path(self, name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "template"
        return self.user_dir / f"{slug}.toml"

    def save(self, template: PromptTemplate, *, replacing: str | None = None) -> PromptTemplate:
        """Save a user template (new, or edited when ``replacing`` names it) and reload."""
        old = self.templates.get(replacing) if replacing else None
        if old is not None and old.origin != "user":
            raise TemplateError(f"{replacing!r} is {old.origin}; duplicate it to make your own version.")
        if template.name != replacing and template.name in self.templates:
            raise TemplateError(f"A template called {template.name!r} already exists.")
        path = old.path if old is not None and old.path else self._free_path(template.name)
        atomic_write_text(path, dump_template(template))
        self.load(self._registered)
        return self.get(template.name)

    def _free_path(self, name: str) -> Path:
        path, k = self._user_path(name), 2
        while path.exists():
            path, k = self._user_path(f"{name}-{k}"), k + 1
        return path

    def duplicate(self, name: str, new_name: str | None = None) -> PromptTemplate:
        """Copy any template (built-in included) into a new user template."""
        source = self.get(name)
        new_name = new_name or f"{source.name} copy"
        k = 2
        while new_name in self.templates:
            new_name, k = f"{source.name} copy {k}", k + 1
        copy = load_template_text(dump_template(source), new_name)
        return self.save(copy)

    def delete(self, name: str) -> None:
        """Delete a user template's file; built-in and plugin templates cannot be deleted."""
        template = self.get(name)
        if template.origin != "user" or template.path is None:
            raise TemplateError(f"{name!r} is {template.origin} and cannot be deleted.")
        template.path.unlink(missing_ok=True)
        self.load(self._registered)

    def import_file(self, path: Path) -> PromptTemplate:
        """Check a template file and add a copy of it to the user's templates."""
        template = load_template(Path(path), "user")
        if template.name in self.templates:
            template.name = f"{template.name} (imported)"
        template.path = None
        return self.save(template)

    def export(self, name: str, path: Path) -> None:
        """Write a template to ``path`` as TOML."""
        atomic_write_text(Path(path), dump_template(self.get(name)))


def load_template_text(text: str, name: str) -> PromptTemplate:
    """Parse template TOML text and give it a new name (used to duplicate)."""
    import tomllib

    from desktop_app_prompt_templates.templates import template_from_dict

    data = tomllib.loads(text)
    data["name"] = name
    return template_from_dict(data, origin="user")
