"""Several answers in one batch with the real model: a shared prompt, their own samplers and Stops.

Which words a model samples is not something a test can count on, so answers that must differ
are forced by grammars, and what is checked is what the engine guarantees: each answer keeps to
its own grammar, limit and stop; the prompt is evaluated once; answers asked for together are
decoded in the same steps; a Stop ends only the answers it belongs to.
"""

from __future__ import annotations

import threading

from desktop_app.core.engine import DoneEvent, ErrorEvent, TokenEvent
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT
from desktop_app.core.turn import ChatMessage, GenerationOptions

SYSTEM = ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT)
QUESTION = [SYSTEM, ChatMessage("user", "Is the sky blue? Answer in one word.")]
#: A grammar that cannot end before any token limit used here: such answers always end "length".
ENDLESS = 'root ::= ("la "){1200}'


def forced(text: str, **more) -> GenerationOptions:
    """Options whose answer can only be ``text``."""
    return GenerationOptions(temperature=0.8, seed=3, max_tokens=40, grammar=f'root ::= "{text}"', **more)


def collect(request):
    """Every answer's streamed text and its final event, by index."""
    streamed: dict[int, str] = {}
    final: dict[int, object] = {}
    for index, event in request.events():
        if isinstance(event, TokenEvent):
            streamed[index] = streamed.get(index, "") + event.text
        else:
            final[index] = event
    return streamed, final


def test_each_answer_keeps_to_its_own_grammar(engine):
    words = ["yes", "no", "maybe so", "blue, mostly"]
    streamed, final = collect(engine.answers(QUESTION, [forced(w) for w in words]))
    assert [final[i].text for i in range(4)] == words
    assert [streamed[i] for i in range(4)] == words
    assert all(final[i].finish_reason == "stop" for i in range(4))


def test_the_shared_prompt_is_evaluated_once(engine):
    scheduler = engine._loaded.scheduler
    prompt = len(engine.tokenize(engine.render(QUESTION)))
    engine.clear_cache()
    before = scheduler.decoded
    # One token each: sampled from the prompt's logits, so nothing but the prompt is decoded.
    _, final = collect(engine.answers(QUESTION, [GenerationOptions(temperature=0.8, seed=i, max_tokens=1)
                                                  for i in range(5)]))
    assert all(final[i].stats.generated_tokens == 1 for i in range(5))
    assert scheduler.decoded - before == prompt  # not five times the prompt
    assert {final[i].stats.prompt_tokens_evaluated for i in range(5)} == {prompt}


def test_limits_and_stop_strings_are_per_answer(engine):
    long = GenerationOptions(temperature=0, max_tokens=12, grammar='root ::= "one two three four five six seven"')
    short = GenerationOptions(temperature=0, max_tokens=3, grammar='root ::= "one two three four five six seven"')
    stopped = GenerationOptions(temperature=0, max_tokens=40, stop=[" four"],
                                grammar='root ::= "one two three four five six seven"')
    _, final = collect(engine.answers(QUESTION, [long, short, stopped]))
    assert final[0].text == "one two three four five six seven" and final[0].finish_reason == "stop"
    assert final[1].finish_reason == "length" and final[1].stats.generated_tokens == 3
    assert final[2].text == "one two three" and final[2].finish_reason == "stop"


def test_answers_asked_for_at_once_are_decoded_in_the_same_steps(engine):
    scheduler = engine._loaded.scheduler
    scheduler.widest = 0
    # Both arrive while the decoder is held, so they start in the same step whatever the timing.
    with scheduler.exclusive():
        first = engine.answers(QUESTION, [forced("the sky is blue")])
        second = engine.answers(QUESTION, [forced("no, it is grey")])
    assert collect(first)[1][0].text == "the sky is blue"
    assert collect(second)[1][0].text == "no, it is grey"
    assert scheduler.widest == 2


def test_a_new_answer_joins_between_steps_and_does_not_wait_for_a_long_one(engine):
    # The long answer is forced to write far more tokens than it takes to ask for the short one.
    long = GenerationOptions(temperature=0, max_tokens=1000, grammar=ENDLESS)
    order = []
    first = engine.answers([SYSTEM, ChatMessage("user", "Sing.")], [long])
    events = first.events()
    for _, event in events:
        if isinstance(event, TokenEvent):
            break
    second = engine.answers(QUESTION, [forced("yes")])
    for _, event in second.events():
        if isinstance(event, DoneEvent):
            order.append("short")
    for _, event in events:
        if isinstance(event, DoneEvent):
            order.append("long")
            assert event.finish_reason == "length" and event.stats.generated_tokens == 1000
    assert order == ["short", "long"]


def test_a_stop_of_its_own_ends_one_answer_and_not_the_others(engine):
    mine, theirs = threading.Event(), None
    long = GenerationOptions(temperature=0, max_tokens=300, grammar=ENDLESS)
    results = {}

    def ask(name, cancel):
        seen = 0
        for event in engine.stream_chat([SYSTEM, ChatMessage("user", "Sing.")], long, cancel=cancel):
            if isinstance(event, TokenEvent):
                seen += 1
                if cancel is not None and seen == 5:
                    cancel.set()
            else:
                results[name] = (event, seen)

    threads = [threading.Thread(target=ask, args=("mine", mine)), threading.Thread(target=ask, args=("theirs", theirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done, seen = results["mine"]
    assert done.finish_reason == "cancelled" and seen == 5 and done.stats.generated_tokens == 5
    done, _ = results["theirs"]
    assert done.finish_reason == "length" and done.stats.generated_tokens == 300


def test_giving_up_one_answer_leaves_the_others(engine):
    long = GenerationOptions(temperature=0, max_tokens=200, grammar=ENDLESS)
    request = engine.answers(QUESTION, [long, long])
    final = {}
    for index, event in request.events():
        if isinstance(event, TokenEvent) and index == 1:
            request.give_up(1)
        elif isinstance(event, (DoneEvent, ErrorEvent)):
            final[index] = event
    assert final[1].finish_reason == "cancelled" and final[1].stats.generated_tokens < 200
    assert final[0].finish_reason == "length" and final[0].stats.generated_tokens == 200


def test_the_engine_stop_ends_every_answer_that_watches_it(engine):
    long = GenerationOptions(temperature=0, max_tokens=300, grammar=ENDLESS)
    request = engine.answers(QUESTION, [long, long, long])
    final = {}
    for index, event in request.events():
        if isinstance(event, TokenEvent) and not final and index == 2:
            engine.cancel()
        elif isinstance(event, DoneEvent):
            final[index] = event
    assert {e.finish_reason for e in final.values()} == {"cancelled"}
    assert not engine.cancel_event.is_set()  # used up: the next answer runs
    done = list(engine.stream_chat(QUESTION, forced("yes")))[-1]
    assert done.text == "yes"


def test_more_answers_than_places_are_refused_with_a_reason(engine):
    import pytest

    from desktop_app.core.errors import EngineError

    with pytest.raises(EngineError, match="parallel"):
        engine.answers(QUESTION, [forced("x")] * (engine.parallel + 1))


def test_unloading_ends_the_answers_being_written_with_what_they_wrote(model_path):
    from desktop_app.core.engine import Engine, LoadConfig

    engine = Engine()
    engine.load(model_path, LoadConfig(context_length=1024))
    long = GenerationOptions(temperature=0, max_tokens=500, grammar=ENDLESS)
    request = engine.answers(QUESTION, [long, long])
    final = {}
    shown = ""
    for index, event in request.events():
        if isinstance(event, TokenEvent) and index == 0:
            shown += event.text
            if len(shown) > 9 and engine.loaded:
                threading.Thread(target=engine.unload).start()
        elif isinstance(event, (DoneEvent, ErrorEvent)):
            final[index] = event
    assert all(isinstance(e, ErrorEvent) and "unloaded" in e.message for e in final.values())
    assert final[0].text.startswith(shown)
    engine.load(model_path, LoadConfig(context_length=1024))  # and the next model works
    assert list(engine.stream_chat(QUESTION, forced("yes")))[-1].text == "yes"
    engine.unload()


def test_idle_places_give_their_cells_back_when_an_answer_starts(engine):
    # Kept cells slow every answer's attention down, so only the place a new answer reuses keeps its cache.
    scheduler = engine._loaded.scheduler
    collect(engine.answers(QUESTION, [forced("yes"), forced("no"), forced("maybe")]))
    assert sum(1 for slot in scheduler.slots if slot.tokens) >= 3
    follow_up = QUESTION + [ChatMessage("assistant", "yes"), ChatMessage("user", "Why?")]
    done = collect(engine.answers(follow_up, [forced("because")]))[1][0]
    assert [len(slot.tokens) > 0 for slot in scheduler.slots].count(True) == 1
    # ...and the follow-up found its own answer's place: only the new message was evaluated.
    assert done.stats.prompt_tokens_evaluated < done.stats.prompt_tokens / 2


def test_a_prompt_that_starts_like_one_being_answered_shares_its_cells(engine):
    # The same system prompt and examples (a lab candidate's items, an API client's requests):
    # the second answer evaluates only what differs, while the first is still being written.
    examples = [SYSTEM] + [m for i in range(6) for m in (ChatMessage("user", f"What is {i} plus {i}?"),
                                                           ChatMessage("assistant", f"{i} plus {i} is {2 * i}."))]
    engine.clear_cache()
    first = engine.answers(examples + [ChatMessage("user", "Sing.")],
                           [GenerationOptions(temperature=0, max_tokens=1000, grammar=ENDLESS)])
    events = first.events()
    for _, event in events:
        if isinstance(event, TokenEvent):
            break  # the first prompt is in the cache, and its answer is being written
    done = collect(engine.answers(examples + [ChatMessage("user", "Is the sky blue?")], [forced("yes")]))[1][0]
    assert done.text == "yes"
    assert done.stats.prompt_tokens > 100 and done.stats.prompt_tokens_evaluated < 20
    first.give_up(0)
    for _, event in events:
        pass
    assert event.finish_reason == "cancelled"
