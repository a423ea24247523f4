"""Running a lab run: every candidate answers every held-out item through the turn pipeline.

Each answer is a real turn (``context.run_turn``): the candidate's template, examples and
strategy, the documents plugin's retrieval, LoRA adapters and tools all apply as in a chat. The
answer is judged at once and appended to the run, so a run that is stopped (or crashes) resumes
where it was: what was judged is not asked again. With greedy decoding and fixed seeds, a run
that answers one at a time (``run.batched`` off) resumes to the uninterrupted run's scores.

Runs block the calling thread for minutes: the window runs them in a task, the command line in
the foreground. ``stop`` (a threading.Event) ends a run between two answers, or mid-answer.

When the model writes several answers at once (``context.model.parallel``), that many answers
are asked at a time, each from a thread of its own: their turns share the engine's batch, so
a grid of candidates and items takes a fraction of the time it takes one answer after another.
Each answer's latency is then its time in that batch. Answers written together can differ from
one-at-a-time answers in a rare token (the rounding of the batch's arithmetic depends on what
else is in it), so their scores match a one-at-a-time run's closely, not to the token.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

from desktop_app.api import ChatMessage, GenerationOptions, ParleyError, PluginContext

from desktop_app_lab.candidates import Candidate, build_setup, final_answer_text
from desktop_app_lab.runs import Run
from desktop_app_lab.tasks import TaskItem, TaskSet, TaskSetError, slug

__all__ = ["Progress", "documents_collection", "planned_answers", "run_lab"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a run is: ``done`` of ``total`` answers judged; ``message`` says what happens now."""

    done: int
    total: int
    candidate: str = ""
    item: str = ""
    message: str = ""
    #: The answer just judged (None for a line about preparing or finishing).
    result: dict[str, Any] | None = None


def planned_answers(run: Run, task_set: TaskSet) -> list[tuple[Candidate, TaskItem, int | None]]:
    """Every answer the run asks for: each candidate on each held-out item, plus the sensitivity
    candidate with each paraphrased instruction. Candidates on the same model stay together,
    so a model is loaded once."""
    plan: list[tuple[Candidate, TaskItem, int | None]] = []
    order = sorted(run.candidates, key=lambda c: (c.model or "", run.candidates.index(c)))
    for candidate in order:
        for item in task_set.test:
            plan.append((candidate, item, None))
        if run.paraphrases and candidate.name == run.sensitivity_candidate:
            for variant in range(len(task_set.paraphrases)):
                for item in task_set.test:
                    plan.append((candidate, item, variant))
    return plan


def make_judge(context: PluginContext, task_set: TaskSet) -> Any:
    """A judge on the loaded model, for sets whose check asks for one."""
    kinds = {task_set.check_for(i).get("kind") for i in task_set.items}
    if "judge" not in kinds:
        return None
    from desktop_app_lab.judge import Judge

    rubric = task_set.check.get("rubric")

    def complete(messages: list[ChatMessage], options: GenerationOptions) -> Any:
        return context.complete(messages, options)

    return Judge(complete, rubric) if rubric else Judge(complete)


def _measure_judge(context: PluginContext, run: Run, task_set: TaskSet, tell: Callable[..., None]) -> None:
    """How often the model, as judge, agrees with the set's labelled answers (kept in the run,
    shown in its report): whether its verdicts could stand in for a person's on this task."""
    from desktop_app_lab.judge import Judge, describe_agreement, judge_agreement

    tell(f"Checking the judge against {len(task_set.judge_labels)} labelled answers…")
    rubric = task_set.check.get("rubric")
    judge = Judge(lambda messages, options: context.complete(messages, options), *([rubric] if rubric else []))
    run.judge = describe_agreement(judge_agreement(judge, task_set))
    run.save()


class _Preparation:
    """What candidates need made before they answer, made once per run and kept in it."""

    def __init__(self, context: PluginContext, run: Run, task_set: TaskSet,
                 say: Callable[[str], None], stop: threading.Event):
        self.context, self.run, self.task_set, self.say, self.stop = context, run, task_set, say, stop

    def collection(self, candidate: Candidate) -> str | None:
        """The collection of the set's documents (indexed on first use; unchanged files are
        not embedded again)."""
        if not candidate.documents:
            return None
        if self.task_set.documents is None:
            raise TaskSetError(f"Candidate {candidate.name!r} answers from documents, but the set "
                               f"{self.task_set.name!r} names no documents folder.")
        if "collection" not in self.run.prepared:
            name = documents_collection(self.context, self.task_set, self.say, self.stop)
            if self.stop.is_set():
                return name  # indexing was stopped part way: a resumed run indexes again
            self.run.prepared["collection"] = name
            self.run.save()
        return self.run.prepared["collection"]

    def adapter(self, candidate: Candidate) -> str | None:
        """The LoRA adapter trained on the set's train split (trained once, kept in the library)."""
        if not candidate.train_lora:
            return None
        key = f"adapter:{candidate.model or ''}"
        if key not in self.run.prepared:
            train = self.context.service("lora.train")
            from desktop_app_lab.candidates import expected_text

            examples = [(item.input, expected_text(item.expected)) for item in self.task_set.train]
            if not examples:
                raise TaskSetError(f"The set {self.task_set.name!r} has no train items to train a LoRA adapter on.")
            self.say(f"Training a LoRA adapter on {len(examples)} train items…")
            model = Path(candidate.model).stem if candidate.model else Path(self.run.model or "model").stem
            # One adapter per run and model: the library reuses an adapter of the same name.
            name = train(examples, name=f"Lab {self.task_set.name} {self.run.id} {model}",
                         on_progress=self.say, stop=self.stop)
            self.run.prepared[key] = name
            self.run.save()
        return self.run.prepared[key]


def _check_model(context: PluginContext, candidate: Candidate, run: Run) -> None:
    """Raise TaskSetError when the model answering is not the one the run is for (none loaded,
    or another picked in the window meanwhile): such answers would be judged against the
    wrong model, so the run stops before recording one."""
    loaded = context.model.path.name if context.model.path is not None else None
    wanted = Path(candidate.model).name if candidate.model else run.model
    if loaded is None:
        raise TaskSetError("No model is loaded: load one, then resume the run.")
    if wanted and Path(wanted).suffix == ".gguf" and loaded != Path(wanted).name:
        raise TaskSetError(f"The model changed to {loaded} during the run, which answers with {wanted}: "
                           f"load {wanted} again, then resume.")


def documents_collection(context: PluginContext, task_set: TaskSet, say: Callable[[str], None],
                         stop: threading.Event) -> str:
    """The collection made from the set's documents folder, by the documents plugin (indexed
    on first use; files unchanged since are not embedded again). ParleyError when the
    documents plugin is off."""
    if task_set.documents is None:
        raise TaskSetError(f"The set {task_set.name!r} names no documents folder.")
    name = f"lab-{slug(task_set.name)}"
    index = context.service("documents.index_folder")
    say(f"Indexing the set's documents ({task_set.documents.name})…")
    made = index(task_set.documents, collection=name, on_progress=say, stop=stop)
    return made.get("collection", name) if isinstance(made, dict) else name


def _result(candidate: Candidate, item: TaskItem, variant: int | None, turn: Any, latency: float,
            setup: dict[str, Any], task_set: TaskSet, judge: Any) -> dict[str, Any]:
    from desktop_app_lab.checks import check_answer

    answer = turn.text or ""
    extracted = final_answer_text(answer, candidate.strategy)
    if turn.error:
        passed, detail = False, f"The answer failed: {turn.error}"
    else:
        verdict = check_answer(task_set.check_for(item), extracted, item.expected, judge=judge, question=item.input)
        passed, detail, extracted = verdict.passed, verdict.detail, verdict.extracted
    stats = dict(turn.stats or {})
    return {
        "candidate": candidate.name, "item": item.id, "variant": variant,
        "answer": answer, "extracted": extracted, "expected": item.expected,
        "passed": bool(passed), "detail": detail, "latency": round(latency, 4),
        "tokens": int(stats.get("generated_tokens") or 0), "finish_reason": turn.finish_reason,
        "error": turn.error, "note": turn.note, "samples": list(turn.samples),
        "stats": stats, "setup": setup, "prompt": turn.prompt,
        "trace": [e.as_dict() for e in turn.trace],
        "conversation_id": None, "message_id": None,
    }


class _InFlight:
    """The answers being written, at most as many as the model writes at once, each asked from
    a thread of its own so that their turns share the engine's batch. Each has one Stop, set
    when the run is stopped or fails, so that none outlives the run."""

    def __init__(self, context: PluginContext, stop: threading.Event, batched: bool = True):
        self.context, self.stop, self.batched = context, stop, batched
        self.halt = threading.Event()
        self.pending: dict[Future, Any] = {}
        self.pool = ThreadPoolExecutor(max_workers=self.width(), thread_name_prefix="parley-lab")

    def width(self) -> int:
        """How many answers are asked at once: as many as the loaded model writes together
        (one for a run that answers one at a time)."""
        return max(1, self.context.model.parallel) if self.batched else 1

    def ask(self, job: Any, messages: list[ChatMessage], setup: dict[str, Any], options: dict[str, Any]) -> None:
        """Start one answer; ``job`` comes back with it to :meth:`collect`'s ``record``."""
        def answer() -> tuple[Any, float]:
            started = time.perf_counter()
            turn = self.context.run_turn(messages, setup=setup, options=options, stop=self.halt)
            return turn, time.perf_counter() - started

        self.pending[self.pool.submit(answer)] = job

    def make_room(self, record: Callable[[Any, Any, float], None]) -> None:
        """Wait until another answer may start, recording those that end meanwhile."""
        while len(self.pending) >= self.width():
            self.collect(record, everything=False)

    def collect(self, record: Callable[[Any, Any, float], None], everything: bool) -> None:
        """Pass the answers that are written to ``record(job, turn, latency)``: at least one, or
        all of them. A stopped answer is not recorded (resuming asks it again); the error of
        an answer that raised is raised here."""
        while self.pending:
            if self.stop.is_set():
                self.halt.set()
            finished, _ = wait(list(self.pending), timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                job = self.pending.pop(future)
                turn, latency = future.result()
                if turn.finish_reason == "cancelled" or self.stop.is_set():
                    self.halt.set()
                    continue
                record(job, turn, latency)
            if finished and not everything:
                return

    def close(self) -> None:
        """End the answers still being written (after a failure they are not needed) and the threads."""
        self.halt.set()
        self.pool.shutdown(wait=True)


def run_lab(context: PluginContext, run: Run, *, on_progress: Callable[[Progress], None] | None = None,
            stop: threading.Event | None = None) -> Run:
    """Answer and judge everything the run still lacks; returns the run (status "finished",
    "stopped" or "failed", with ``message`` saying why).

    Resumes an interrupted run: answers already judged are kept. The model the run switched
    to for a candidate is switched back at the end. Raises nothing for a failed answer (it is
    judged wrong, with its error); a task set whose check is broken, or a candidate that cannot
    be prepared, fails the run with a message a person can act on.
    """
    stop = stop or threading.Event()
    task_set = run.task_set()
    plan = planned_answers(run, task_set)
    done = run.done()
    total = len(plan)
    count = sum(1 for c, i, v in plan if (c.name, i.id, v) in done)

    def tell(message: str, candidate: str = "", item: str = "", result: dict[str, Any] | None = None) -> None:
        if on_progress is not None:
            on_progress(Progress(count, total, candidate, item, message, result))

    if not run.model and context.model.path is not None:
        run.model = context.model.path.name
    run.status, run.message = "running", ""
    run.save()
    original_model = context.model.path
    prepare = _Preparation(context, run, task_set, lambda text: tell(text), stop)
    current_model: str | None = None
    written = _InFlight(context, stop, run.batched)

    def record(job: tuple[Candidate, TaskItem, int | None, dict[str, Any], str], turn: Any, latency: float) -> None:
        nonlocal count
        candidate, item, variant, setup, label = job
        _check_model(context, candidate, run)
        result = _result(candidate, item, variant, turn, latency, setup, task_set, judge)
        run.record(result)
        count += 1
        tell(f"{label}: {'right' if result['passed'] else 'wrong'}", candidate.name, item.id, result)

    try:
        judge = make_judge(context, task_set)
        tool_names = sorted(context.tools()) if any(c.all_tools for c in run.candidates) else []
        for candidate, item, variant in plan:
            if stop.is_set():
                break
            if (candidate.name, item.id, variant) in done:
                continue
            if (candidate.model or None) != current_model:
                written.collect(record, everything=True)  # the answers on the model before come first
                if candidate.model or current_model is not None:
                    tell(f"Loading {candidate.model or 'the run’s model'}…", candidate.name)
                    context.load_model(candidate.model or str(original_model))
                current_model = candidate.model or None
            instruction = task_set.paraphrases[variant] if variant is not None else None
            setup, options = build_setup(candidate, task_set, instruction=instruction,
                                         collection=prepare.collection(candidate),
                                         trained_adapter=prepare.adapter(candidate), tool_names=tool_names)
            written.make_room(record)
            if stop.is_set():
                break
            label = f"{candidate.name}: {item.id}" + (f" (instruction {variant + 1})" if variant is not None else "")
            tell(f"Answering {label}", candidate.name, item.id)
            written.ask((candidate, item, variant, setup, label), [ChatMessage("user", item.input)], setup, options)
        written.collect(record, everything=True)
        if not stop.is_set() and task_set.judge_labels and not run.judge:
            _measure_judge(context, run, task_set, tell)
        if stop.is_set():
            run.status, run.message = "stopped", f"Stopped after {count} of {total} answers; resume to finish."
        else:
            run.status, run.message = "finished", f"{count} answers judged."
    except (ParleyError, OSError) as exc:
        if stop.is_set():  # e.g. training stopped: the run is stopped, not broken
            run.status, run.message = "stopped", f"Stopped after {count} of {total} answers; resume to finish."
        else:
            log.warning("lab run %s failed: %s", run.id, exc)
            run.status, run.message = "failed", str(exc)
    except KeyboardInterrupt:
        run.status, run.message = "stopped", f"Stopped after {count} of {total} answers; resume to finish."
        raise
    except Exception as exc:  # a bug must not leave the run "running" for ever
        log.exception("lab run %s failed", run.id)
        run.status, run.message = "failed", f"The run failed unexpectedly ({type(exc).__name__}: {exc}); " \
                                            "resume to try again, and please report it."
    finally:
        written.close()
        if current_model is not None and original_model is not None:
            try:
                context.load_model(str(original_model))
            except ParleyError as exc:  # the user can pick a model again; the run is kept
                log.warning("could not load %s again after the run: %s", original_model, exc)
        run.save()
        tell(run.message)
    return run
