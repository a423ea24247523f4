"""Apply the winner: save a run's candidate as a template (and an API profile) new chats use.

The candidate's prompt (instruction, worked examples, step-by-step wrapper, strategy, JSON
schema, sampling) becomes a template in the user's template library through the templates
plugin, and, unless the user says not to, the default template, so every new conversation
uses it. A template carries only the prompt: a candidate that also answers from documents,
with adapters or tools is saved as well as a profile with its whole setup, when the API server
plugin that keeps profiles is enabled (``profile:NAME``), and the reply says which parts the
template leaves out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from desktop_app.api import ParleyError, PluginContext

from desktop_app_lab.candidates import Candidate, build_setup
from desktop_app_lab.runs import Run
from desktop_app_lab.tasks import TaskSetError

__all__ = ["Applied", "apply_candidate", "template_data"]


@dataclass
class Applied:
    """What applying saved: the template's name, the profile's (or None), and what a template
    could not carry."""

    template: str
    default: bool
    profile: str | None = None
    left_out: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A sentence or two for people."""
        text = f"Saved the template {self.template!r}"
        text += ", now the default for new conversations." if self.default else "."
        if self.profile:
            text += f" Its whole setup is the profile {self.profile!r} (model profile:{self.profile})."
        if self.left_out:
            text += " The template does not carry " + ", ".join(self.left_out) + ": choose them in the chat's panels."
        return text


def template_data(candidate: Candidate, setup: dict[str, Any], name: str) -> dict[str, Any]:
    """The template fields of a candidate's setup, named ``name``."""
    inline = dict(setup["plugins"]["prompt_templates"]["inline"])
    inline["name"] = name
    # The run's short answer limit suits scoring, not chatting: new conversations keep the
    # user's own answer length (and the temperature the candidate was measured with).
    preset = {k: v for k, v in dict(inline.get("preset") or {}).items() if k != "max_tokens"}
    if preset:
        inline["preset"] = preset
    else:
        inline.pop("preset", None)
    return inline


def _left_out(setup: dict[str, Any]) -> list[str]:
    plugins = setup["plugins"]
    parts = []
    if plugins["local_docs"]["collections"]:
        parts.append("the document collections (" + ", ".join(plugins["local_docs"]["collections"]) + ")")
    if plugins["lora"]["adapters"]:
        parts.append("the LoRA adapters (" + ", ".join(a["name"] for a in plugins["lora"]["adapters"]) + ")")
    if plugins["tools"]["tools"]:
        parts.append("the tools (" + ", ".join(plugins["tools"]["tools"]) + ")")
    return parts


def apply_candidate(context: PluginContext, run: Run, candidate_name: str | None = None, *,
                    name: str | None = None, make_default: bool = True, profile: bool | None = None) -> Applied:
    """Save ``candidate_name`` of ``run`` (None: the run's best) as a template named ``name``
    (default: "‹set› – ‹candidate›"), the default for new conversations unless told otherwise.

    ``profile`` True also saves the whole setup as an API profile; None does so only when the
    template cannot carry the whole setup. Raises TaskSetError naming the run's candidates for
    an unknown one, ParleyError when the templates plugin is off.
    """
    if candidate_name is None:
        from desktop_app_lab.stats import best, scorecard

        if run.status != "finished":  # a candidate at 1/1 would beat one at 30/40
            raise TaskSetError(f"Run {run.id} is {run.status}, so its candidates have not all answered every item: "
                               f"resume it first (parley lab resume {run.id}), or name the candidate to apply.")

        names = [c.name for c in run.candidates]
        candidate_name = best(scorecard(run.latest(), names))
        if candidate_name is None:
            raise TaskSetError(f"Run {run.id} has no answers yet, so it has no best candidate.")
    candidate = run.candidate(candidate_name)
    task_set = run.task_set()
    setup, _ = build_setup(candidate, task_set, collection=run.prepared.get("collection"),
                           trained_adapter=run.prepared.get(f"adapter:{candidate.model or ''}"),
                           tool_names=sorted(context.tools()) if candidate.all_tools else [])
    title = name or f"{task_set.name} – {candidate.name}"
    saved = context.service("templates.save")(template_data(candidate, setup, title), make_default=make_default)
    left_out = _left_out(setup)
    applied = Applied(saved, make_default, left_out=left_out)
    if profile or (profile is None and left_out):
        profile_name = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:64] or "lab-winner"
        plugins = dict(setup["plugins"])
        plugins["prompt_templates"] = {"template": saved, "variables": {}}
        try:
            applied.profile = context.service("profiles.save")(profile_name, {"plugins": plugins},
                                                               model=candidate.model)
        except ParleyError:
            if profile:
                raise
        applied.left_out = left_out
    return applied
