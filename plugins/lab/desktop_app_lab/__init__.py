"""The strategy lab: measure which customisation works on the user's own task, and apply the winner.
A built-in plugin.

A *task set* (:mod:`desktop_app_lab.tasks`) holds inputs with what counts as right; a *run*
(:mod:`desktop_app_lab.runner`) answers its held-out items with each *candidate*
(:mod:`desktop_app_lab.candidates`: a model, an instruction, examples, a strategy, documents,
adapters, tools) through Parley's whole turn pipeline, and keeps every answer with its trace and
verdict; the *scorecard* (:mod:`desktop_app_lab.stats`) and the HTML report
(:mod:`desktop_app_lab.report`) say which candidate wins and by how much; *apply*
(:mod:`desktop_app_lab.apply`) saves the winner as a template new conversations use.
"""

from __future__ import annotations

from typing import Any

from desktop_app.api import ParleyError, PluginContext, hookimpl

__version__ = "0.1.0"
__all__ = ["state"]

PLUGIN = "lab"


class State:
    """The plugin's context for the app's lifetime."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        #: The stored runs (:class:`desktop_app_lab.runs.RunStore`).
        self.runs: Any = None
        #: The task sets (:class:`desktop_app_lab.library.TaskSetLibrary`).
        self.library: Any = None
        #: The lab window, once opened.
        self.window: Any = None

    def require(self) -> PluginContext:
        """The context; ParleyError before the app started the plugin."""
        if self.context is None:
            raise ParleyError("The strategy lab has not started yet.")
        return self.context


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context; the user's task sets and the runs live in the plugin's data folder."""
    from desktop_app_lab.library import TaskSetLibrary
    from desktop_app_lab.runs import RunStore

    state.context = context
    state.runs = RunStore(context.data_dir / "lab" / "runs")
    state.library = TaskSetLibrary(context.data_dir / "lab" / "sets")


@hookimpl
def register_commands(subparsers) -> None:
    """`parley lab sets|import|run|resume|runs|report|apply|optimise`."""
    from desktop_app_lab.cli import register

    register(subparsers)


@hookimpl
def register_actions(register) -> None:
    """Plugins → Strategy lab…"""
    from desktop_app_lab.ui import open_lab

    register("Strategy lab…", open_lab)


@hookimpl
def register_message_actions(register) -> None:
    """An answer's More → Add to task set…"""
    from desktop_app_lab.ui_add import add_to_task_set

    register("Add to task set…", add_to_task_set, roles=("assistant",))
