"""Step 6 of the turn pipeline: the model calls tools, they run, the model continues.

One round: the model answers (text, or tool calls written in the turn's protocol); each
call is checked against the tool's schema, approved (a plugin's ``approve_tool_call`` first,
then the tool's default, then the user), run with its timeout, in the order written, and the
results go back to the model together. Rounds are bounded; after the last one the model must
answer in text. Text the model wrote before its calls (the native Hermes layout allows it)
stays shown and begins the final answer.
Everything that can go wrong with a call (malformed JSON, an unknown tool, bad arguments,
a denial, an error or a timeout) becomes the call's result, so the model can explain or
try again and the chat goes on. Each call is recorded in the trace with its arguments,
result, duration and who decided.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

from desktop_app.core.tool_protocol import ToolProtocol, protocol_for
from desktop_app.core.tools import ToolCall, ToolError, ToolOutcome, run_tool, validate_arguments
from desktop_app.core.turn import GenerationOptions, Tool, TraceEntry, Turn, TurnResult, trigger_opening

__all__ = ["Approver", "CallHider", "ToolCallFinished", "ToolCallStarted", "ToolLoop", "call_options"]

log = logging.getLogger(__name__)

#: Token budget of a round that may write a call, whatever the answer's own limit.
MIN_CALL_TOKENS = 160

#: Calls run from one reply; more are answered with an error (the grammars allow no more).
MAX_CALLS_PER_REPLY = 8

#: ``approver(call, tool)`` asks the user whether ``call`` may run (blocking is fine) and
#: returns True/False for this call, or "always"/"never" to decide for the tool from now on.
Approver = Callable[[ToolCall, Tool], "bool | str"]


@dataclass
class ToolCallStarted:
    """The model asked for a tool; it is about to be approved and run."""

    call: ToolCall
    source: str


@dataclass
class ToolCallFinished:
    """A tool call has a result (or an error the model will read)."""

    outcome: ToolOutcome


class CallHider:
    """Passes answer text on to the user, but holds back a reply that is a tool call.

    With ``calls_after_text`` a call may also follow text: the text stays shown, and from
    the trigger on the reply is held back (text that may be the trigger's start waits).
    """

    def __init__(self, on_token: Callable[[str], None] | None, trigger: str, hide_all: bool,
                 calls_after_text: bool = False):
        self.on_token = on_token
        self.trigger = trigger
        self.calls_after_text = calls_after_text
        self.state = "hidden" if hide_all else "undecided"
        self.held = ""
        self.shown = ""  # what the user has seen of this reply

    def __call__(self, piece: str) -> None:
        if self.state == "hidden":
            return
        if self.state == "shown" and not self.calls_after_text:
            self._show(piece)
            return
        self.held += piece
        if self.state == "undecided":
            opens = trigger_opening(self.held, self.trigger)
            if opens is None:
                return
            if opens:
                self.state = "hidden"
                return
            self.state = "shown"
            if not self.calls_after_text:
                self._show(self.held)
                self.held = ""
                return
        # Shown text that may go on with a call: show all of it except what may start the
        # trigger and any trailing blanks (blanks before a call are dropped, not shown).
        at = self.held.find(self.trigger)
        if at != -1:
            self._show(self.held[:at].rstrip())
            self.held = ""
            self.state = "hidden"
            return
        visible = self.held[:len(self.held) - _partial_suffix(self.held, self.trigger)]
        visible = visible.rstrip()
        self._show(visible)
        self.held = self.held[len(visible):]

    def flush(self) -> None:
        """Show text held back because it might have begun a call (the reply ended instead)."""
        if self.state == "shown" and self.held:
            self._show(self.held)
        self.held = ""

    def _show(self, text: str) -> None:
        if text:
            self.shown += text
            if self.on_token:
                self.on_token(text)


def _partial_suffix(text: str, trigger: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``trigger``."""
    for n in range(min(len(trigger) - 1, len(text)), 0, -1):
        if text.endswith(trigger[:n]):
            return n
    return 0


class ToolLoop:
    """Runs one turn that offers tools: rounds of generation and tool calls."""

    def __init__(
        self,
        generate_once: Callable[[Turn, GenerationOptions, Callable[[str], None] | None, Any], TurnResult],
        template_source: str | None,
        hooks: Any,
        approver: Approver | None,
        on_event: Callable[[Any], None],
        cancelled: threading.Event | None = None,
        consume: bool = True,
    ):
        self.generate_once = generate_once
        self.template_source = template_source
        self.hooks = hooks
        self.approver = approver
        self.on_event = on_event
        self.cancelled = cancelled
        #: Whether a Stop seen between tool calls is used up (the engine's shared one), or left
        #: set (a turn's own, which its caller owns).
        self.consume = consume

    def run(self, turn: Turn, options: GenerationOptions, on_token: Callable[[str], None] | None) -> TurnResult:
        """Generate ``turn``'s answer, running the tools it calls; returns the final answer."""
        tools = _unique(turn.tools)
        by_name = {t.name: t for t in tools}
        protocol = protocol_for(self.template_source, tools, turn.user_message)
        # The protocol text goes into this pass only, so the turn stays as the plugins left it.
        working = replace(turn, tool_exchange=list(turn.tool_exchange))
        instructions = protocol.system_text()
        if instructions:
            working.system_prompt = f"{turn.system_prompt}\n\n{instructions}" if turn.system_prompt else instructions
        rounds = max(0, int(options.max_tool_rounds))
        # Work adds up over the rounds; the context in use is the last round's prompt.
        totals = {"generated_tokens": 0, "total_time": 0.0}
        first_token = None
        round_no = 0
        attempted: set[str] = set()  # calls already made (repeating one gives nothing new)
        answer_now = False
        said = ""  # text shown before calls, in earlier rounds: it begins the final answer
        calls_made = 0
        while True:
            may_call = round_no < rounds and bool(tools) and not answer_now
            required = may_call and round_no == 0 and options.tool_choice == "required"
            round_options = self._options(protocol, options, may_call, required, after_calls=round_no > 0)
            hider = CallHider(on_token, protocol.trigger, required, protocol.calls_after_text)
            result = self.generate_once(working, round_options, hider if may_call else on_token,
                                        protocol.template_tools())
            for key in totals:
                totals[key] += result.stats.get(key) or 0
            if first_token is None:
                first_token = result.stats.get("time_to_first_token")
            if result.finish_reason == "cancelled" and may_call:
                # Stopped mid-reply: the answer is what the user saw, never half a call.
                hider.flush()
                result = replace(result, text=hider.shown)
            if result.finish_reason == "cancelled" or not may_call:
                break
            try:
                calls = protocol.parse_calls(result.text)
            except ToolError as exc:
                said += self._keep_shown(hider, on_token)
                outcome = ToolOutcome(ToolCall("?", {"written": result.text[:500]}), "invalid", error=str(exc),
                                      round=round_no + 1)
                self.on_event(ToolCallFinished(outcome))
                self._record(turn, outcome)
                working.tool_exchange.extend(protocol.error_exchange(result.text, outcome))
                round_no += 1
                continue
            if not calls:
                hider.flush()
                if hider.state == "hidden" and on_token and result.text:
                    on_token(result.text)  # a reply that looked like a call but was not one
                break
            said += self._keep_shown(hider, on_token)
            fresh: dict[str, ToolCall] = {}  # by key: a call written twice in one reply runs once
            for call in calls:
                key = _call_key(call)
                if key not in attempted:
                    fresh.setdefault(key, call)
            if not fresh:
                # Small models tend to repeat a call; its result (or error) is already in front
                # of the model and would be the same again, so the next reply must be the answer.
                # Told so, the model sees a new prompt (the same one would bring the same reply).
                answer_now = True
                repeated = ToolOutcome(calls[0], "invalid", error="You already made this call; its result is "
                                                                  "above. Answer the question with it now.")
                working.tool_exchange.extend(protocol.error_exchange(result.text, repeated))
                continue
            round_no += 1
            outcomes = []
            for i, (key, call) in enumerate(fresh.items()):
                calls_made += 1
                call.id = call.id or f"call_{calls_made}"
                if i >= MAX_CALLS_PER_REPLY:
                    outcome = ToolOutcome(call, "invalid", round=round_no, error=(
                        f"Not run: at most {MAX_CALLS_PER_REPLY} calls run from one reply. Ask again."))
                    self.on_event(ToolCallFinished(outcome))
                else:
                    attempted.add(key)
                    outcome = self.run_call(call, by_name, round_no)
                self._record(turn, outcome)
                outcomes.append(outcome)
                if self.cancelled is not None and self.cancelled.is_set():
                    break
            working.tool_exchange.extend(protocol.exchange(outcomes, hider.shown))
            if self.cancelled is not None and self.cancelled.is_set():
                # Stopped while a tool ran: this generation consumes the Stop, and the answer
                # is what was shown, never the calls' JSON.
                if self.consume:
                    self.cancelled.clear()
                result = TurnResult("", "cancelled", result.stats, result.prompt)
                break
        stats = dict(result.stats)
        stats.update(totals)
        stats["tool_rounds"] = round_no
        if first_token is not None:
            stats["time_to_first_token"] = first_token
        text = said + result.text if result.text else said.rstrip()
        return TurnResult(text, result.finish_reason, stats, result.prompt, result.samples)

    @staticmethod
    def _keep_shown(hider: CallHider, on_token: Callable[[str], None] | None) -> str:
        """The text the user saw before this reply's call, kept for the final answer, which
        goes on after a blank line (shown now, so the stream and the answer agree)."""
        if not hider.shown.strip():
            return ""
        if on_token:
            on_token("\n\n")
        return hider.shown.rstrip() + "\n\n"

    @staticmethod
    def _options(protocol: ToolProtocol, options: GenerationOptions, may_call: bool,
                 required: bool, after_calls: bool) -> GenerationOptions:
        if not may_call:
            # No more calls. A call after text (with its tag) ends the answer there, so it
            # never reaches the screen.
            stop = [*options.stop, protocol.trigger] if protocol.calls_after_text else options.stop
            if not after_calls:
                return replace(options, grammar=None, json_schema=None, grammar_trigger="", stop=stop)
            # The reply must not open like a call either. The grammar only shapes the first
            # characters and is dropped as soon as the text has begun (full speed).
            return replace(options, grammar=protocol.text_grammar(), json_schema=None,
                           grammar_trigger=protocol.trigger, stop=stop)
        return call_options(protocol, options, required)

    def run_call(self, call: ToolCall, tools: dict[str, Tool], round_no: int = 1) -> ToolOutcome:
        """Check, approve and run one call; every failure becomes the outcome's error."""
        self.on_event(ToolCallStarted(call, tools[call.name].source if call.name in tools else ""))
        outcome = self._decide_and_run(call, tools, round_no)
        self.on_event(ToolCallFinished(outcome))
        return outcome

    def _decide_and_run(self, call: ToolCall, tools: dict[str, Tool], round_no: int) -> ToolOutcome:
        tool = tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(tools)) or "none"
            return ToolOutcome(call, "invalid", error=f"There is no tool named {call.name!r}. Tools: {known}.",
                               round=round_no)
        try:
            call.arguments = validate_arguments(tool, call.arguments)
        except ToolError as exc:
            return ToolOutcome(call, "invalid", error=str(exc), source=tool.source, round=round_no)
        allowed, decided_by = self._approve(call, tool)
        if not allowed:
            error = ("This tool runs only after the user allows each call, and no one can be asked here, "
                     "so it was not run." if decided_by == "no one to ask" else "The user did not allow this call.")
            return ToolOutcome(call, "denied", decided_by, error=error, source=tool.source, round=round_no)
        result, error, ms = run_tool(tool, call.arguments, self.cancelled)
        decision = "approved" if decided_by == "you" else "allowed"
        return ToolOutcome(call, decision, decided_by, result=result, error=error, duration_ms=ms,
                           source=tool.source, round=round_no)

    def _approve(self, call: ToolCall, tool: Tool) -> tuple[bool, str]:
        """(allowed, who decided): a plugin first, then the tool's default, then the user."""
        request = {"tool": call.name, "arguments": call.arguments, "source": tool.source}
        verdict = self.hooks.approve_tool_call(call=request)
        if verdict is True or verdict is False:
            return verdict, "policy"
        if verdict is not None and verdict != "ask":
            log.warning("approve_tool_call returned %r; asking the user instead", verdict)
        if verdict is None and not tool.requires_approval:
            return True, ""
        if self.approver is None:
            return False, "no one to ask"
        try:
            answer = self.approver(call, tool)
        except Exception:
            log.exception("asking for approval failed")
            return False, "no one to ask"
        if answer in ("always", "never"):
            # The user chose once and for all: a plugin that keeps policies remembers it.
            self.hooks.remember_tool_policy(tool=call.name, policy="allow" if answer == "always" else "deny")
            return answer == "always", "you"
        return bool(answer), "you"

    @staticmethod
    def _record(turn: Turn, outcome: ToolOutcome) -> None:
        turn.trace.append(TraceEntry(outcome.source or "tools", "tool_call", outcome.as_dict()))


def call_options(protocol: ToolProtocol, options: GenerationOptions, required: bool,
                 parallel: bool = True) -> GenerationOptions:
    """Options for a reply that may be a call: the protocol's call grammar (binding only a reply
    that opens like a call, unless the call is ``required``; one call at most unless ``parallel``)."""
    # A call must be able to finish even when answers are kept very short.
    return replace(options, grammar=protocol.grammar(required, parallel), json_schema=None,
                   grammar_trigger="" if required else protocol.trigger,
                   max_tokens=max(options.max_tokens, MIN_CALL_TOKENS))


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


def _unique(tools: list[Tool]) -> list[Tool]:
    seen: dict[str, Tool] = {}
    for tool in tools:
        seen.setdefault(tool.name, tool)
    return list(seen.values())
