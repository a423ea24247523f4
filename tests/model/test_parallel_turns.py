"""Whole turns asked from several threads (the window, the API, the lab) share the engine's batch,
each with a Stop of its own, on the real model.

What the model says is forced by grammars; what is checked is what the pipeline guarantees:
turns asked together are decoded in the same steps, a turn's own Stop ends it alone, and the
window's Stop (the engine's shared one) does not end a turn that has its own.
"""

from __future__ import annotations

import threading
import time

import pytest

from desktop_app.core.turn import ChatMessage

ENDLESS = 'root ::= ("la "){1200}'


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context

    context = build_context(paths)
    context.settings.set("model.context_length", 2048)
    context.load_model(None)
    yield context
    context.close()


def _wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_turns_from_several_threads_are_written_together_each_with_its_own_stop(context):
    plugin = context.plugin_context("lab")
    scheduler = context.engine._loaded.scheduler
    scheduler.widest = 0
    stops = {"long": threading.Event(), "short": threading.Event()}
    tokens = {"long": [], "short": []}
    results = {}

    def ask(name: str, grammar: str, limit: int) -> None:
        results[name] = plugin.run_turn([ChatMessage("user", "Say something.")], stop=stops[name],
                                        options={"grammar": grammar, "max_tokens": limit},
                                        on_token=tokens[name].append)

    threads = [threading.Thread(target=ask, args=("long", ENDLESS, 1000)),
               threading.Thread(target=ask, args=("short", 'root ::= "the sky is blue"', 40))]
    # Both turns reach the engine while it is held, so they start in the same step whatever the timing.
    with scheduler.exclusive():
        for thread in threads:
            thread.start()
        _wait_for(lambda: scheduler.answering == 2, "both turns to reach the engine")
    threads[1].join(120)
    assert results["short"].text == "the sky is blue" and results["short"].finish_reason == "stop"
    assert scheduler.widest == 2
    assert "long" not in results  # 1,000 tokens to go, decoded in the same steps as the short one

    context.engine.cancel()  # the window's Stop: a turn with a Stop of its own goes on writing
    written = len(tokens["long"])
    _wait_for(lambda: len(tokens["long"]) > written + 3, "the long turn to go on after the window's Stop")
    stops["long"].set()
    threads[0].join(120)
    assert results["long"].finish_reason == "cancelled" and results["long"].text.startswith("la la")
    context.engine.reset_cancel()
