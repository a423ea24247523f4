"""Several answers written at once: one llama.cpp context, one batch per step, one sequence per answer.

llama.cpp decodes a batch of tokens from several sequences for little more than the cost of
one token, because a step's time goes into reading the model's weights, which every sequence
shares. So the :class:`Scheduler` owns the loaded model's context and runs a loop on a thread
of its own: every step puts the next token of each answer being written, plus a chunk of any
new prompt, into one ``llama_decode``, then samples each answer from its own row of logits.
New requests join between steps (continuous batching); an answer that ends frees its place.

Each answer is a sequence in the KV cache (``seq_id``) with its own sampler, grammar, stop
strings, token limit and Stop. The places (slots) keep what their last answer left in the cache,
so a follow-up question that starts with the same tokens only evaluates what is new. A request
for several answers to one prompt (self-consistency's samples, the API's ``n``) evaluates the
prompt once and copies it to the other sequences' places: llama.cpp shares the cache cells.

Everything that touches the context runs on the scheduler's thread, or inside
:meth:`Scheduler.exclusive` while it is idle.
"""

from __future__ import annotations

import codecs
import ctypes
import itertools
import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from desktop_app.core.adapters import same_adapters
from desktop_app.core.errors import EngineError
from desktop_app.core.events import DoneEvent, ErrorEvent, GenerationStats, TokenEvent
from desktop_app.core.sampling import Sampler, build_sampler
from desktop_app.core.turn import GenerationOptions, trigger_opening

__all__ = ["Request", "Scheduler"]

log = logging.getLogger(__name__)

#: Idle places that keep what their last answer left in the cache besides the one a new answer
#: reuses (see Scheduler._trim_idle).
KEEP_IDLE = 0

#: What a sequence ended with; the next prompt begins a message after it.


@dataclass(eq=False)
class _Slot:
    """One sequence id in the KV cache and the tokens the cache holds for it."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    used: int = 0  # when it last served an answer (for evicting the least recently used)


@dataclass(eq=False)
class Request:
    """One prompt and the answers wanted to it (one per options), as the engine hands them over.

    Events reach ``sink`` as ``(index, event, tokens so far)``: TokenEvents, then a DoneEvent or
    ErrorEvent for each answer. ``cancel`` stops all its answers; None means the engine's shared
    Stop, which marks the request ``halted`` at once (see :meth:`events`).
    """

    tokens: list[int]
    prompt: str
    options: list[GenerationOptions]
    adapters: tuple[Any, ...] = ()
    cancel: threading.Event | None = None
    dropped: int = 0
    started: float = field(default_factory=time.perf_counter)
    sink: "queue.SimpleQueue[tuple[int, Any, int]]" = field(default_factory=queue.SimpleQueue)
    #: Answers given up on by whoever asked (each by index), e.g. a vote already decided.
    given_up: set[int] = field(default_factory=set)
    abandoned: bool = False
    #: Set by the engine's Stop for a request that watches it (a request's own ``cancel`` aside).
    halted: bool = False
    # Filled in by the scheduler.
    evaluated: int = 0
    to_evaluate: list[int] = field(default_factory=list)
    lead: "_Sequence | None" = None
    members: list["_Sequence"] = field(default_factory=list)
    finished: int = 0

    def stopped(self) -> bool:
        """Whether a Stop for all of this request's answers has come."""
        return self.halted or self.abandoned or (self.cancel is not None and self.cancel.is_set())

    def events(self) -> Iterator[tuple[int, Any]]:
        """The ``(index, event)`` pairs as they come, until every answer has ended.

        The answers are written on another thread, a token or so ahead of whoever reads them.
        Once a Stop has come, no further text is passed on: the answer ends "cancelled" with
        what was shown, as if it had stopped at once.
        """
        left = len(self.options)
        shown: dict[int, tuple[str, int]] = {}  # per answer: the text passed on, and its tokens
        held_back: set[int] = set()
        try:
            while left:
                index, event, count = self.sink.get()
                if isinstance(event, TokenEvent):
                    if self.stopped() or index in self.given_up:
                        held_back.add(index)
                        continue
                    text, _ = shown.get(index, ("", 0))
                    shown[index] = (text + event.text, count)
                elif isinstance(event, (DoneEvent, ErrorEvent)):
                    left -= 1
                    if index in held_back:
                        text, count = shown.get(index, ("", 0))
                        if isinstance(event, DoneEvent):
                            event = DoneEvent(text, "cancelled", replace(event.stats, generated_tokens=count),
                                              event.prompt)
                        else:
                            event = ErrorEvent(event.message, text)
                yield index, event
        finally:
            if left:  # the caller stopped listening: its answers stop at the next step
                self.abandoned = True

    def give_up(self, index: int) -> None:
        """Stop answer ``index`` at the next step (it ends "cancelled" with what it wrote)."""
        self.given_up.add(index)


class _Sequence:
    """One answer being written: its place in the cache, its sampler and what it wrote so far."""

    def __init__(self, scheduler: "Scheduler", request: Request, index: int, slot: _Slot):
        self.scheduler = scheduler
        self.request = request
        self.index = index
        self.slot = slot
        options = request.options[index]
        self.options = options
        self.sampler: Sampler | None = None
        self.decode_text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self.stop = [s for s in options.stop if s]
        self.held = ""  # text held back because it may be the start of a stop string
        self.text = ""
        self.count = 0
        self.limit = min(options.max_tokens, scheduler.n_ctx - len(request.tokens))
        self.generated: list[int] = []
        # A grammar with a trigger binds only answers that begin with the trigger.
        self.undecided = bool(options.grammar_trigger) and bool(options.grammar or options.json_schema)
        self.opening = ""
        self.first_at = 0.0
        self.next_token: int | None = None
        self.state = "waiting"  # waiting (for its prompt), writing, done

    def cancelled(self) -> bool:
        request = self.request
        if request.stopped() or self.index in request.given_up:
            return True
        return request.cancel is None and self.scheduler.stop_requested()

    def take(self, token: int) -> None:
        """The token sampled for this answer: end it, or show it and feed it back next step."""
        scheduler = self.scheduler
        if scheduler.is_end(token):
            self.finish("stop")
            return
        self.count += 1
        if self.count == 1:
            self.first_at = time.perf_counter()
        piece = self.decode_text(scheduler.piece(token))
        self.generated.append(token)
        if self.undecided and piece:
            self.opening += piece
            opens = trigger_opening(self.opening, self.options.grammar_trigger)
            if opens:
                self.undecided = False  # a constrained answer: the grammar stays
            elif opens is False:
                # Free text: checking the grammar on every token would halve the speed.
                self.undecided = False
                self.sampler.free()
                self.sampler = None
                self.sampler = build_sampler(scheduler.vocab, replace(self.options, grammar=None, json_schema=None))
                for seen in self.generated:  # the repeat penalty remembers what was said
                    self.sampler.accept(seen)
        if piece:
            if self.stop:
                self.held += piece
                emit, self.held, hit_stop = _split_stop(self.held, self.stop)
            else:
                emit, hit_stop = piece, False
            if emit:
                self.text += emit
                self.request.sink.put((self.index, TokenEvent(emit), self.count))
            if hit_stop:
                self.held = ""
                self.finish("stop")
                return
        if self.count >= self.limit:
            self.finish("length")  # the last token allowed: nothing will be sampled after it
            return
        self.next_token = token

    def finish(self, reason: str) -> None:
        """End the answer: the text held back, the stats, and its place freed (after the end token)."""
        request = self.request
        self.next_token = None
        # Text held back for a stop string that never completed belongs to the answer.
        tail = self.held + self.decode_text(b"", final=True)
        self.held = ""
        if tail:
            self.text += tail
            request.sink.put((self.index, TokenEvent(tail), self.count))
        now = time.perf_counter()
        stats = GenerationStats(prompt_tokens=len(request.tokens), prompt_tokens_evaluated=request.evaluated,
                                generated_tokens=self.count, dropped_messages=request.dropped,
                                context_length=self.scheduler.n_ctx, total_time=now - request.started)
        if self.count:
            stats.time_to_first_token = self.first_at - request.started
        if self.count > 1 and now > self.first_at:
            stats.tokens_per_second = (self.count - 1) / (now - self.first_at)
        # Its place is free before the answer is reported, so a follow-up sent at once finds it
        # idle (the end token is not fed to the cache: the follow-up evaluates that one token).
        self.release()
        self.state = "done"
        self.slot.busy = False
        request.sink.put((self.index, DoneEvent(self.text, reason, stats, request.prompt), self.count))

    def fail(self, message: str) -> None:
        """End the answer with an error, keeping what it wrote."""
        self.release()
        self.state = "done"
        self.slot.busy = False
        self.request.sink.put((self.index, ErrorEvent(message, self.text + self.held), self.count))

    def release(self) -> None:
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None
        self.request.finished += 1


class Scheduler:
    """Decodes the answers of every request in one batch per step, on a thread of its own.

    ``loaded`` is the engine's loaded model (its context, vocabulary and caches); ``stop`` is
    the engine's shared Stop, consumed by the answers that watch it; ``apply_adapters(target)``
    puts a LoRA set on the context (called here, between answers, when a request wants another).
    """

    def __init__(self, loaded: Any, stop: threading.Event, apply_adapters: Any, slots: int, batch_size: int):
        import llama_cpp

        self.loaded = loaded
        self.vocab = loaded.vocab
        self.ctx = loaded.llm._ctx.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = loaded.n_ctx
        self._stop = stop
        self._stop_seen = False
        self._apply_adapters = apply_adapters
        self.applied: tuple[Any, ...] = ()
        self.slots = [_Slot(i) for i in range(max(1, slots))]
        self.batch_size = max(1, batch_size)
        self._batch = llama_cpp.llama_batch_init(self.batch_size, 0, 1)
        self._cond = threading.Condition()
        self._pending: list[Request] = []
        self._active: list[Request] = []
        self._closing = False
        self._busy = False
        self._paused = 0
        self._clock = itertools.count(1)
        #: The most answers one step has decoded together, and how many tokens went into
        #: llama_decode in all (for tests and benchmarks).
        self.widest = 0
        self.decoded = 0
        self._thread: threading.Thread | None = None
        self._llama = llama_cpp

    # -- for the engine -----------------------------------------------------------------------
    @property
    def parallel(self) -> int:
        """How many answers can be written at once."""
        return len(self.slots)

    def submit(self, request: Request) -> Request:
        """Queue ``request``; its answers start at the next step that has room for them."""
        if len(request.options) > len(self.slots):
            raise EngineError(f"{len(request.options)} answers at once is more than this model's "
                              f"{len(self.slots)} parallel sequences.")
        with self._cond:
            if self._closing:
                raise EngineError("No model is loaded. Pick a model first.")
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="parley-decode", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return request

    @property
    def answering(self) -> int:
        """How many answers are being written or waiting."""
        with self._cond:
            return sum(len(r.options) - r.finished for r in (*self._pending, *self._active))

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the context while no answer is being written (e.g. to empty the cache)."""
        with self._cond:
            self._paused += 1
            while self._busy:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def use_adapters(self, target: tuple[Any, ...]) -> None:
        """Put the LoRA set ``target`` on the context now if no answer is being written or waits
        (else the next answer that wants it gets it); a change empties the cache."""
        with self._cond:
            # Answers that have all ended only have their last step to finish: wait for it.
            while self._busy and not self._pending and all(r.finished == len(r.options) for r in self._active):
                self._cond.wait()
            if self._busy or self._pending or self._active:
                return
            self._paused += 1
        try:
            if not same_adapters(target, self.applied):
                self._apply_adapters(target)
                self.applied = target
                self.forget()  # the cache was computed with the old weights
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def forget(self) -> None:
        """Empty the KV cache of every place (call inside :meth:`exclusive`)."""
        self._llama.llama_memory_clear(self.memory, True)
        for slot in self.slots:
            slot.tokens.clear()

    def close(self) -> None:
        """End every answer with an error and stop the thread (the model is being unloaded)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._fail_everything("The model was unloaded while answering.")
        if self._batch is not None:
            self._llama.llama_batch_free(self._batch)
            self._batch = None

    def halt(self) -> bool:
        """The engine's Stop was pressed: the requests that watch it stop passing on text now.

        Returns whether any answer was still to be written (then the Stop is used up; otherwise
        it waits for the next answer).
        """
        live = False
        with self._cond:
            for request in (*self._active, *self._pending):
                if request.cancel is None and not request.halted and (
                        not request.members or any(s.state in ("waiting", "writing") for s in request.members)):
                    request.halted = live = True
        return live

    def stop_requested(self) -> bool:
        """Whether the engine's shared Stop is set (an answer that sees it consumes it)."""
        if self._stop.is_set():
            self._stop_seen = True
            return True
        return False

    # -- tokens -------------------------------------------------------------------------------
    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (cached: a ctypes call per token costs more)."""
        ends = self.loaded.ends
        end = ends.get(token)
        if end is None:
            end = ends[token] = bool(self._llama.llama_vocab_is_eog(self.vocab, token))
        return end

    def piece(self, token: int) -> bytes:
        """A token's bytes (cached: the same tokens recur constantly)."""
        pieces = self.loaded.pieces
        piece = pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            piece = pieces[token] = buf.raw[:max(n, 0)]
        return piece

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._active and (self._paused or not self._pending):
                    if self._busy:
                        self._busy = False
                        self._cond.notify_all()
                    self._cond.wait()
                if self._closing:
                    self._busy = False
                    self._cond.notify_all()
                    return
                self._busy = True
                arrived = [] if self._paused else self._pending
                if arrived:
                    self._pending = []
            try:
                self._admit(arrived)
                if self._active:
                    self._step()
            except Exception as exc:  # a llama.cpp failure must not take the app down
                log.exception("generation failed")
                self._fail_everything(f"Generation failed: {exc}")
                # The KV cache may be inconsistent now; forget it so the next answers start clean.
                self.forget()
                for slot in self.slots:
                    slot.busy = False
            if self._stop_seen:  # the answers watching the shared Stop have consumed it
                self._stop_seen = False
                self._stop.clear()

    def _fail_everything(self, message: str) -> None:
        with self._cond:
            requests, self._pending, self._active = [*self._active, *self._pending], [], []
        for request in requests:
            for sequence in request.members:
                if sequence.state in ("waiting", "writing"):
                    sequence.fail(message)
            for index in range(len(request.members), len(request.options)):
                request.sink.put((index, ErrorEvent(message), 0))

    def _admit(self, arrived: list[Request]) -> None:
        """Give the new requests places in the cache, in the order they came, while there is room.

        A request that cannot start yet (no free places, or it needs other LoRA adapters than
        the answers being written) waits, and so does everything after it: first come, first served.
        """
        waiting = list(arrived)
        while waiting:
            request = waiting[0]
            if request.stopped() or (request.cancel is None and self.stop_requested()):
                waiting.pop(0)
                self._cancel_unstarted(request)
                continue
            free = [s for s in self.slots if not s.busy]
            if len(free) < len(request.options) or (self._active and not self._room_for(request)):
                break
            if not same_adapters(request.adapters, self.applied):
                if self._active:
                    break
                self._apply_adapters(request.adapters)
                self.applied = request.adapters
                self.forget()  # the cache was computed with the old weights
            waiting.pop(0)
            self._start(request, free)
        if waiting:
            with self._cond:
                self._pending[:0] = waiting

    def _room_for(self, request: Request) -> bool:
        """Whether the cache cells the answers being written may still need leave room for ``request``."""
        def need(r: Request) -> int:
            limit = sum(min(o.max_tokens, self.n_ctx) for o in r.options)
            return len(r.tokens) + limit
        used = sum(need(r) for r in self._active)
        return used + need(request) <= self.n_ctx

    def _cancel_unstarted(self, request: Request) -> None:
        stats = GenerationStats(prompt_tokens=len(request.tokens), dropped_messages=request.dropped,
                                context_length=self.n_ctx)
        for index in range(len(request.options)):
            request.sink.put((index, DoneEvent("", "cancelled", stats, request.prompt), 0))

    def _start(self, request: Request, free: list[_Slot]) -> None:
        llama = self._llama
        tokens = request.tokens
        # The lead evaluates the prompt: the free place whose cache shares the longest start with it.
        lead = max(free, key=lambda s: (_common(s.tokens, tokens), -s.used))
        common = min(_common(lead.tokens, tokens), len(tokens) - 1)
        donor, shared = self._donor(tokens, lead)
        if shared > common:
            # Another place holds a longer start of this prompt (an answer being written to the
            # same system prompt and examples, say): its cells are shared, not evaluated again.
            llama.llama_memory_seq_rm(self.memory, lead.seq_id, -1, -1)
            llama.llama_memory_seq_cp(self.memory, donor.seq_id, lead.seq_id, 0, shared)
            lead.tokens[:] = tokens[:shared]
            common = shared
        elif common == 0 or not llama.llama_memory_seq_rm(self.memory, lead.seq_id, common, -1):
            llama.llama_memory_seq_rm(self.memory, lead.seq_id, -1, -1)
            common = 0
        del lead.tokens[common:]
        others = sorted((s for s in free if s is not lead), key=lambda s: s.used)[:len(request.options) - 1]
        for slot in [lead, *others]:
            slot.busy = True
            slot.used = next(self._clock)
        for slot in others:
            llama.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()
        self._trim_idle()
        request.to_evaluate = tokens[common:]
        request.evaluated = len(request.to_evaluate)
        request.members = [_Sequence(self, request, i, slot) for i, slot in enumerate([lead, *others])]
        request.lead = request.members[0]
        try:
            for sequence in request.members:
                sequence.sampler = build_sampler(self.vocab, sequence.options)
        except EngineError as exc:
            for sequence in request.members:
                sequence.fail(str(exc))
            return
        with self._cond:
            self._active.append(request)

    def _donor(self, tokens: Sequence[int], lead: _Slot) -> tuple[_Slot | None, int]:
        """The place besides ``lead`` whose cache shares the longest start with ``tokens``, and
        how many tokens of it can be shared (never the whole prompt: its last token is evaluated
        for the logits of the first answer token)."""
        best, length = None, 0
        for slot in self.slots:
            if slot is not lead and slot.tokens:
                n = min(_common(slot.tokens, tokens), len(tokens) - 1)
                if n > length:
                    best, length = slot, n
        return best, length

    def _trim_idle(self) -> None:
        """Idle places give their cache back when an answer starts (call after choosing its places).

        Every answer's attention reads the cache up to its last cell in use, masked or not, so
        cells kept for idle places slow every answer down: after five 400-token answers, one
        stream ran at three quarters of its speed here. The place the new answer reuses keeps
        what it shares with it (a chat's follow-up comes back to its own place); a client that
        asks again after someone else evaluates its prompt again, which costs far less.
        """
        idle = sorted((s for s in self.slots if not s.busy and s.tokens), key=lambda s: s.used, reverse=True)
        for slot in idle[KEEP_IDLE:]:
            self._llama.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()

    def _step(self) -> None:
        """One llama_decode: each answer's last token and chunks of new prompts."""
        llama = self._llama
        batch = self._batch
        writing: list[tuple[_Sequence, int]] = []  # (sequence, its row of logits)
        prompts: list[tuple[Request, list[int], int]] = []  # (request, its tokens in this batch, row of the last)
        n = 0
        for request in self._active:
            for sequence in request.members:
                if sequence.state == "writing":
                    if sequence.cancelled():
                        sequence.finish("cancelled")
                        continue
                    slot = sequence.slot
                    _put(batch, n, sequence.next_token, len(slot.tokens), slot.seq_id, True)
                    writing.append((sequence, n))
                    n += 1
        for request in self._active:
            lead = request.lead
            if not request.to_evaluate or lead is None or n >= self.batch_size:
                continue
            if all(s.cancelled() for s in request.members if s.state == "waiting"):
                for sequence in request.members:
                    if sequence.state == "waiting":
                        sequence.finish("cancelled")
                request.to_evaluate = []
                continue
            take = min(len(request.to_evaluate), self.batch_size - n)
            chunk, request.to_evaluate = request.to_evaluate[:take], request.to_evaluate[take:]
            slot = lead.slot
            position = len(slot.tokens)
            last = not request.to_evaluate
            for i, token in enumerate(chunk):
                _put(batch, n + i, token, position + i, slot.seq_id, last and i == take - 1)
            prompts.append((request, chunk, n + take - 1))
            n += take
        self.widest = max(self.widest, len(writing))
        if n:
            batch.n_tokens = n
            self._decode(batch)
            self.decoded += n
        for sequence, row in writing:
            sequence.slot.tokens.append(sequence.next_token)
        for request, chunk, row in prompts:
            lead = request.lead
            lead.slot.tokens.extend(chunk)
            if request.to_evaluate:
                continue
            # The prompt is in the cache: the other answers share its cells, then all sample from its logits.
            for sequence in request.members:
                if sequence is not lead:
                    llama.llama_memory_seq_cp(self.memory, lead.slot.seq_id, sequence.slot.seq_id, -1, -1)
                    sequence.slot.tokens[:] = lead.slot.tokens
            for sequence in request.members:
                if sequence.state != "waiting":
                    continue
                sequence.state = "writing"
                if sequence.cancelled():
                    sequence.finish("cancelled")
                elif sequence.limit <= 0:
                    sequence.finish("length")
                else:
                    sequence.take(sequence.sampler.sample(self.ctx, row))
        for sequence, row in writing:
            if sequence.state == "writing":
                sequence.take(sequence.sampler.sample(self.ctx, row))
        self._retire()

    def _decode(self, batch: Any) -> None:
        """Decode ``batch``; when the cache is full, make room by forgetting idle places' caches."""
        while True:
            result = self._llama.llama_decode(self.ctx, batch)
            if result == 0:
                return
            if result != 1:
                raise EngineError("llama.cpp failed to evaluate the batch.")
            # 1: no room in the cache for the batch. Idle places give theirs back, oldest first.
            idle = sorted((s for s in self.slots if not s.busy and s.tokens), key=lambda s: s.used)
            if not idle:
                raise EngineError("The context is full: the answers being written need more room than "
                                  "the model was loaded with. Load it with a longer context, or ask "
                                  "for fewer answers at once.")
            self._llama.llama_memory_seq_rm(self.memory, idle[0].seq_id, -1, -1)
            idle[0].tokens.clear()

    def _retire(self) -> None:
        with self._cond:
            done = [r for r in self._active if all(s.state == "done" for s in r.members)]
            for request in done:
                self._active.remove(request)


def _put(batch: Any, i: int, token: int, position: int, seq_id: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = position
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = logits


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split_stop(held: str, stop: list[str]) -> tuple[str, str, bool]:
    """Split ``held`` into (text safe to show, text to keep holding, whether a stop string was hit).

    Text that could be the beginning of a stop string is held back until it is clear
    whether the stop string completes, so the user never sees half of one.
    """
    if not stop:
        return held, "", False
    first = -1
    for s in stop:
        i = held.find(s)
        if i != -1 and (first == -1 or i < first):
            first = i
    if first != -1:
        return held[:first], "", True
    keep = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(held)), 0, -1):
            if held.endswith(s[:n]):
                keep = max(keep, n)
                break
    if keep:
        return held[:-keep], held[-keep:], False
    return held, "", False
