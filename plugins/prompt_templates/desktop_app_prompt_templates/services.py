"""What the templates plugin offers other plugins (``register_services``)."""

from __future__ import annotations

from typing import Any

from desktop_app.api import ParleyError

__all__ = ["save_template"]


def save_template(data: dict[str, Any], make_default: bool = False) -> str:
    """``templates.save``: save a template (the same fields as a template file) into the user's
    library, replacing the user's own template of that name; ``make_default`` makes it the
    template new conversations start with. Returns its name; ParleyError for a bad template or
    a name a built-in template has."""
    from desktop_app_prompt_templates import state
    from desktop_app_prompt_templates.templates import TemplateError, template_from_dict

    if state.context is None:
        raise ParleyError("The templates plugin has not started yet.")
    try:
        template = template_from_dict(dict(data), origin="user")
        existing = state.library.templates.get(template.name)
        replacing = template.name if existing is not None and existing.origin == "user" else None
        saved = state.library.save(template, replacing=replacing)
    except TemplateError as exc:
        raise ParleyError(f"The template cannot be saved: {exc}") from exc
    if make_default:
        state.context.settings.set("default_template", saved.name)
        state.context.settings.save()
    return saved.name
