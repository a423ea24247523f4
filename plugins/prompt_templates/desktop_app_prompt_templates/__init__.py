"""Prompt templates: system prompts, message wrappers with variables, few-shot examples,
presets, JSON output, and the self-consistency strategy. A built-in Parley plugin.

Which template a turn uses, in order: the turn's own choice (``--template`` on the command
line, recorded for the conversation), the conversation's remembered choice, the choice in
the window's template picker, then the ``default_template`` setting.

A choice may carry its template with it, not saved in the library: ``{"template": name,
"inline": {...the template's fields...}}`` (the strategy lab tries candidates so, and saves only
the one the user applies).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from desktop_app.api import ConversationChoice, Option, PluginContext, Turn, TurnResult, hookimpl

from desktop_app_prompt_templates.library import TemplateLibrary, builtin_templates
from desktop_app_prompt_templates.templates import PromptTemplate, TemplateError

__version__ = "0.1.0"
__all__ = ["state", "PLUGIN"]

log = logging.getLogger(__name__)

PLUGIN = "prompt_templates"
SELF_CONSISTENCY = "self-consistency"


class State:
    """What the plugin holds for the app's lifetime: its context, the library, the template choice."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        self.library: TemplateLibrary | None = None
        #: Which template each conversation uses; its ``selection`` is the window picker's.
        self.choice: ConversationChoice | None = None
        self.registration_errors: list[str] = []

    def start(self, context: PluginContext) -> None:
        """Take a fresh context (nothing from an earlier one carries over) and load the library."""
        self.__init__()
        self.context = context

        def default() -> dict[str, Any]:  # read each time: the user may change it in Settings
            name = context.settings.get("default_template")
            return {"template": name, "variables": {}} if name else {}

        self.choice = context.choice("template", default=default, fields=("template", "variables", "inline"))
        self.reload()

    def reload(self) -> TemplateLibrary:
        """Collect templates from every plugin (built-ins come from this one) and the user's folder."""
        from desktop_app_prompt_templates.templates import template_from_dict

        registered: list[PromptTemplate] = []
        errors: list[str] = []
        for entry in self.context.collect("register_prompt_templates"):
            template = entry.item
            if isinstance(template, PromptTemplate):
                registered.append(template)
            elif isinstance(template, dict):
                try:
                    registered.append(template_from_dict(template, origin="plugin"))
                except TemplateError as exc:
                    errors.append(f"{exc} (from the plugin {entry.plugin})")
            else:
                errors.append(f"Ignored a template of type {type(template).__name__} from the plugin {entry.plugin}.")
        # Built-ins first, whatever order the plugins were loaded in.
        registered.sort(key=lambda t: t.origin != "built-in")
        self.library = TemplateLibrary(self.context.data_dir / "templates").load(registered)
        self.library.errors = errors + self.library.errors
        for error in self.library.errors:
            log.warning("prompt template skipped: %s", error)
        return self.library

    def selection_for(self, conversation_id: int | None) -> dict[str, Any]:
        """The template choice that applies to a conversation."""
        return self.choice.current(conversation_id)[0]


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context and load the template library."""
    state.start(context)


@hookimpl
def register_settings(register) -> None:
    """This plugin's settings."""
    register([
        Option("default_template", str, "", "Template for conversations that have none; empty = no template."),
        Option("samples", int, 5, "Self-consistency: how many answers to sample.", minimum=1, maximum=20),
        Option("temperature", float, 0.5, "Self-consistency: temperature of the samples after the greedy first one.",
               minimum=0.0, maximum=2.0),
    ])


@hookimpl
def register_prompt_templates(register) -> None:
    """Register the templates that ship with Parley."""
    templates, errors = builtin_templates()
    for template in templates:
        register(template)
    for error in errors:
        log.error("a built-in template is broken: %s", error)


@hookimpl
def prepare_turn(turn: Turn) -> None:
    """Apply the conversation's template: system prompt, examples, wrapped message, preset, output schema."""
    if state.library is None:
        return
    chosen = turn.plugin_options.get(PLUGIN) or {}
    selection = state.choice.for_turn(turn)
    name = selection.get("template")
    if not name:
        return  # generate_turn still honours a --strategy given without a template
    try:
        template = _inline_template(selection.get("inline"), name) or state.library.get(name)
        apply_template(turn, template, selection.get("variables"))
    except TemplateError as exc:
        # A broken template never breaks the chat: the message goes out as typed.
        turn.add_note(f"Template not applied: {exc}")
        log.warning("template not applied: %s", exc)
        return
    strategy = chosen.get("strategy") or template.strategy.get("name") or ""
    turn.plugin_options.setdefault(PLUGIN, {}).update(active=template.name, strategy=strategy)
    if selection.get("inline"):
        turn.plugin_options[PLUGIN]["inline"] = selection["inline"]


def _inline_template(data: Any, name: str) -> PromptTemplate | None:
    """The template a choice carries with it (None when it names one from the library)."""
    if not data:
        return None
    from desktop_app_prompt_templates.templates import template_from_dict

    if not isinstance(data, dict):
        raise TemplateError("The template given with this conversation is not a table of fields.")
    return template_from_dict({**data, "name": data.get("name") or name}, origin="conversation")


def apply_template(turn: Turn, template: PromptTemplate, values: dict[str, Any] | None) -> None:
    """Put a template into a turn: system prompt, examples, wrapped message, preset, output schema.

    Renders everything first, so a template that fails leaves the turn untouched.
    """
    rendered = template.render(turn.user_message, values)
    if rendered["system"]:
        turn.replace_system(rendered["system"])
    for question, answer in rendered["examples"]:
        turn.add_example(question, answer)
    if template.user:
        turn.set_user_message(rendered["user"])
    for key, value in template.preset.items():
        turn.set_option(key, list(value) if isinstance(value, list) else value)
    if template.json_schema:
        turn.set_option("json_schema", template.json_schema)


@hookimpl
def generate_turn(turn: Turn, generate) -> TurnResult | None:
    """Run self-consistency when the template (or the turn) asks for it; otherwise leave generation alone."""
    options = turn.plugin_options.get(PLUGIN) or {}
    if options.get("strategy") != SELF_CONSISTENCY or state.library is None:
        return None
    from desktop_app_prompt_templates.strategies import self_consistency
    from desktop_app_prompt_templates.templates import PromptTemplate

    # Without a template (or one that could not be applied), vote on the whole answers.
    active = options.get("active")
    try:
        template = _inline_template(options.get("inline"), active or "")
    except TemplateError:
        template = None  # prepare_turn already said why it was not applied
    template = template or (state.library.templates.get(active) if active else None)
    template = template or PromptTemplate("(no template)", origin="strategy")
    settings = state.context.settings
    samples = int(options.get("samples") or template.strategy.get("samples") or settings.get("samples"))
    temperature = float(template.strategy.get("temperature", settings.get("temperature")))
    return self_consistency(turn, generate, template, samples, temperature)


class _TemplateOption(argparse.Action):
    """Collects --template/--var/--strategy/--samples into ``args.plugin_options``."""

    def __call__(self, parser, namespace, value, option_string=None):
        options = getattr(namespace, "plugin_options", None) or {}
        mine = options.setdefault(PLUGIN, {})
        if self.dest == "var":
            key, sep, val = value.partition("=")
            if not sep or not key.strip():
                parser.error(f"--var needs KEY=VALUE, not {value!r}")
            mine.setdefault("variables", {})[key.strip()] = val
        elif self.dest == "samples":
            mine["samples"] = int(value)
        else:
            mine[self.dest] = value
        namespace.plugin_options = options


@hookimpl
def register_commands(subparsers) -> None:
    """Add --template/--var to `parley chat`, and `parley templates ...`."""
    chat = subparsers.choices.get("chat")
    if chat is not None:
        chat.add_argument("--template", action=_TemplateOption, help="answer with this prompt template")
        chat.add_argument("--var", action=_TemplateOption, metavar="KEY=VALUE",
                          help="a value for one of the template's variables (repeatable)")
        chat.add_argument("--strategy", action=_TemplateOption, choices=[SELF_CONSISTENCY],
                          help="how to generate: self-consistency samples several answers and votes")
        chat.add_argument("--samples", action=_TemplateOption, type=int,
                          help="self-consistency: how many answers to sample")
    templates = subparsers.add_parser("templates", help="prompt templates").add_subparsers(
        title="actions", metavar="ACTION", required=True)
    p = templates.add_parser("list", help="list templates with their origin and variables")
    p.set_defaults(handler=_cmd_list)
    p = templates.add_parser("show", help="print a template as TOML")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_show)
    p = templates.add_parser("export", help="write a template to a TOML file")
    p.add_argument("name")
    p.add_argument("file")
    p.set_defaults(handler=_cmd_export)
    p = templates.add_parser("import", help="add a template from a TOML file")
    p.add_argument("file")
    p.set_defaults(handler=_cmd_import)
    p = templates.add_parser("duplicate", help="copy a template into your own templates")
    p.add_argument("name")
    p.add_argument("new_name", nargs="?")
    p.set_defaults(handler=_cmd_duplicate)
    p = templates.add_parser("delete", help="delete one of your templates")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_delete)


def _cmd_list(args, context) -> int:
    library = state.library
    for name, template in library.templates.items():
        variables = ", ".join(template.variable_names)
        extra = f"  [{variables}]" if variables else ""
        print(f"{name}\t{template.origin}\t{template.description}{extra}")
    for error in library.errors:
        print(f"skipped: {error}")
    return 0


def _cmd_show(args, context) -> int:
    from desktop_app_prompt_templates.templates import dump_template

    print(dump_template(state.library.get(args.name)), end="")
    return 0


def _cmd_export(args, context) -> int:
    state.library.export(args.name, args.file)
    print(f"Wrote {args.file}.")
    return 0


def _cmd_import(args, context) -> int:
    template = state.library.import_file(args.file)
    print(f"Imported {template.name}.")
    return 0


def _cmd_duplicate(args, context) -> int:
    template = state.library.duplicate(args.name, args.new_name)
    print(f"Created {template.name} ({template.path}).")
    return 0


def _cmd_delete(args, context) -> int:
    state.library.delete(args.name)
    print(f"Deleted {args.name}.")
    return 0


@hookimpl
def register_composer_widgets(register) -> None:
    """The template picker and its variables, above the message box."""
    from desktop_app_prompt_templates.ui import TemplateBar

    register(lambda window, parent: TemplateBar(window, parent))


@hookimpl
def register_actions(register) -> None:
    """Menu actions: improve the prompt, edit templates."""
    from desktop_app_prompt_templates import ui

    def open_editor(window) -> None:
        window.open_dialog(ui.TemplateEditor(window, None, window.widget))

    register("Improve this prompt", ui.improve_prompt, shortcut="Ctrl+I")
    register("Prompt templates…", open_editor)


@hookimpl
def register_services(register) -> None:
    """``templates.save`` for other plugins (the strategy lab applies its winner with it)."""
    from desktop_app_prompt_templates.services import save_template

    register("templates.save", save_template)
