"""The engine with the real SmolLM2-135M model: streaming, stats, cancel, KV reuse, fitting."""

import os
import sys
import threading
import time

import pytest

from desktop_app.core.chat_template import ChatTemplate
from desktop_app.core.engine import DoneEvent, Engine, ErrorEvent, LoadConfig, TokenEvent, physical_cores
from desktop_app.core.errors import EngineError, ModelFileError, ModelLoadError
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT
from desktop_app.core.turn import ChatMessage, GenerationOptions
from tests.gguf_files import write_tiny_gguf

SYSTEM = ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT)


def run(engine, messages, options):
    events = list(engine.stream_chat(messages, options))
    assert isinstance(events[-1], (DoneEvent, ErrorEvent))
    return events


def test_streams_tokens_then_done_with_stats(engine, greedy):
    events = run(engine, [SYSTEM, ChatMessage("user", "What is the capital of France?")], greedy)
    done = events[-1]
    assert isinstance(done, DoneEvent), done
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert len(tokens) > 3 and "".join(tokens) == done.text
    assert "Paris" in done.text
    s = done.stats
    assert s.prompt_tokens > 20 and s.generated_tokens >= len(tokens) - 1
    assert s.time_to_first_token > 0 and s.tokens_per_second > 0  # the speed itself: benchmarks/
    assert done.prompt.startswith("<|im_start|>system\n" + DEFAULT_MODEL_SYSTEM_PROMPT)
    assert done.prompt.endswith("<|im_start|>assistant\n")


def test_greedy_is_deterministic_and_max_tokens_is_honoured(engine):
    options = GenerationOptions(temperature=0, max_tokens=12)
    messages = [SYSTEM, ChatMessage("user", "Write a long poem about the sea.")]
    a, b = run(engine, messages, options)[-1], run(engine, messages, options)[-1]
    assert a.text == b.text
    assert a.finish_reason == "length" and a.stats.generated_tokens == 12


def test_seeded_sampling_repeats_and_different_seeds_differ(engine):
    messages = [SYSTEM, ChatMessage("user", "Tell me a short story about a cat.")]
    texts = [run(engine, messages, GenerationOptions(temperature=1.2, max_tokens=30, seed=s))[-1].text
             for s in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


def test_stop_strings_end_the_answer_and_are_never_shown(engine):
    options = GenerationOptions(temperature=0, max_tokens=60)
    messages = [SYSTEM, ChatMessage("user", "Count from 1 to 10, separated by commas.")]
    full = run(engine, messages, options)[-1].text
    assert "4" in full
    stop = full[full.index("4"):full.index("4") + 2]
    events = run(engine, messages, GenerationOptions(temperature=0, max_tokens=60, stop=[stop]))
    done = events[-1]
    assert done.finish_reason == "stop"
    assert done.text == full[:full.index(stop)]
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == done.text


def test_cancel_from_another_thread_stops_within_a_token_and_keeps_the_text(engine):
    options = GenerationOptions(temperature=0, max_tokens=400)
    messages = [SYSTEM, ChatMessage("user", "Write a very long essay about the history of Rome.")]
    seen = []
    done = None
    for event in engine.stream_chat(messages, options):
        if isinstance(event, TokenEvent):
            seen.append(event.text)
            if len(seen) == 5:
                canceller = threading.Thread(target=engine.cancel)
                canceller.start()
                canceller.join()  # Stop pressed on another thread, and landed
                cancelled_at = len(seen)
        else:
            done = event
    assert isinstance(done, DoneEvent) and done.finish_reason == "cancelled"
    assert done.text == "".join(seen)
    # Within one token: at most the token being decoded when the flag was set gets out.
    assert len(seen) <= cancelled_at + 1
    assert done.stats.generated_tokens < 40


def test_cancel_is_immediate_when_set_before_the_next_token(engine):
    options = GenerationOptions(temperature=0, max_tokens=400)
    messages = [SYSTEM, ChatMessage("user", "Write a very long essay about the history of Rome.")]
    tokens = 0
    for event in engine.stream_chat(messages, options):
        if isinstance(event, TokenEvent):
            tokens += 1
            if tokens == 3:
                engine.cancel()  # same consumer: no further token may be produced
        else:
            done = event
    assert tokens == 3 and done.finish_reason == "cancelled" and done.stats.generated_tokens == 3


def test_follow_up_reuses_the_kv_cache(engine, greedy):
    history = [SYSTEM]
    for question in ("Name a fruit.", "Name a colour.", "Name an animal."):
        history.append(ChatMessage("user", question))
        done = run(engine, history, greedy)[-1]
        history.append(ChatMessage("assistant", done.text))
    # Only the new message (and the previous answer's closing tokens) are evaluated.
    assert done.stats.prompt_tokens > 80
    assert done.stats.prompt_tokens_evaluated < 25


def test_changing_history_evaluates_from_the_first_difference(engine, greedy):
    a = [SYSTEM, ChatMessage("user", "Say hello."), ChatMessage("assistant", "Hello!"), ChatMessage("user", "Again.")]
    run(engine, a, greedy)
    b = [SYSTEM, ChatMessage("user", "Say goodbye."), ChatMessage("assistant", "Bye!"), ChatMessage("user", "Again.")]
    done = run(engine, b, greedy)[-1]
    ta, tb = engine.tokenize(engine.render(a)), engine.tokenize(engine.render(b))
    common = next(i for i, (x, y) in enumerate(zip(ta, tb)) if x != y)
    assert common > 20  # the shared system prompt
    assert done.stats.prompt_tokens_evaluated == len(tb) - common


def test_long_history_is_fitted_into_a_small_context_without_error(model_path):
    small = Engine()
    small.load(model_path, LoadConfig(context_length=512))
    try:
        history = [SYSTEM]
        for i in range(40):
            history += [ChatMessage("user", f"Message number {i}: tell me about topic {i}."),
                        ChatMessage("assistant", f"Topic {i} is interesting because of reason {i}. " * 3)]
        history.append(ChatMessage("user", "What is 2 + 2?"))
        done = run(small, history, GenerationOptions(temperature=0, max_tokens=64))[-1]
        assert isinstance(done, DoneEvent), done
        assert done.stats.dropped_messages > 50
        assert done.stats.prompt_tokens + 64 <= 512
        assert done.prompt.startswith("<|im_start|>system\n" + DEFAULT_MODEL_SYSTEM_PROMPT)
        assert "What is 2 + 2?" in done.prompt
        # A single message longer than the window is shortened, not refused.
        huge = [SYSTEM, ChatMessage("user", "word " * 3000 + "Summarise.")]
        done = run(small, huge, GenerationOptions(temperature=0, max_tokens=32))[-1]
        assert isinstance(done, DoneEvent), done
        assert done.stats.prompt_tokens <= 512 - 32
        # Asking for more tokens than the window holds stops at the window, never overflows.
        long_question = "Here is some context: " + "the sky is blue and the grass is green. " * 40
        done = run(small, [SYSTEM, ChatMessage("user", long_question + "Write a long story.")],
                   GenerationOptions(temperature=0, max_tokens=5000))[-1]
        assert isinstance(done, DoneEvent)
        assert done.stats.prompt_tokens + done.stats.generated_tokens <= 512
    finally:
        small.unload()


def test_one_model_call_at_a_time(engine):
    options = GenerationOptions(temperature=0, max_tokens=20)
    messages = [SYSTEM, ChatMessage("user", "Say something.")]
    spans = []

    def worker():
        start = time.perf_counter()
        for event in engine.stream_chat(messages, options):
            pass
        spans.append((start, time.perf_counter(), event))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(e, DoneEvent) and e.stats.generated_tokens > 0 for _, _, e in spans)
    (s1, e1, _), (s2, e2, _) = sorted(spans, key=lambda s: s[1])
    # The second caller's generation finished only after the first released the model.
    assert e2 - e1 >= 0.5 * (e1 - max(s1, s2)) or e2 > e1


def test_bad_model_files_are_refused_and_the_previous_model_stays(model_path, tmp_path):
    engine = Engine()
    engine.load(model_path, LoadConfig(context_length=512))
    try:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"not a model at all" * 10)
        with pytest.raises(ModelFileError, match="not a GGUF"):
            engine.load(bad)
        alien = write_tiny_gguf(tmp_path / "alien.gguf", "alienformer")
        with pytest.raises(ModelFileError, match="alienformer"):
            engine.load(alien)
        # Valid structure, but not a runnable llama model: llama.cpp itself refuses it.
        broken = write_tiny_gguf(tmp_path / "broken.gguf", "llama")
        with pytest.raises(ModelLoadError, match="Still using SmolLM2"):
            engine.load(broken)
        assert engine.loaded and engine.model_path == model_path
        done = list(engine.stream_chat([ChatMessage("user", "Hi")], GenerationOptions(max_tokens=5)))[-1]
        assert isinstance(done, DoneEvent)
    finally:
        engine.unload()


def test_no_model_gives_a_readable_error():
    events = list(Engine().stream_chat([ChatMessage("user", "Hi")]))
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert "No model is loaded" in events[0].message
    with pytest.raises(EngineError):
        Engine().render([ChatMessage("user", "x")])


def test_load_options_and_unload(model_path):
    engine = Engine()
    engine.load(model_path, LoadConfig(context_length=1024, threads=1, batch_size=64, mmap=False))
    assert engine.context_length == 1024 and engine.config.threads == 1
    done = list(engine.stream_chat([ChatMessage("user", "Hi")], GenerationOptions(max_tokens=4)))[-1]
    assert isinstance(done, DoneEvent)
    engine.unload()
    assert not engine.loaded and engine.model_path is None


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_unload_gives_the_memory_back(model_path):
    engine = Engine()
    before = _resident_bytes()
    # Without mmap the weights live in the process's own memory, where the drop shows.
    engine.load(model_path, LoadConfig(context_length=2048, mmap=False))
    loaded = _resident_bytes()
    engine.unload()
    after = _resident_bytes()
    assert loaded - before > 50 * 2**20  # the weights alone are about 90 MiB
    assert loaded - after > 0.8 * (loaded - before)


def test_gpu_layers_on_a_cpu_build_warn_instead_of_failing(model_path):
    engine = Engine()
    warnings = engine.load(model_path, LoadConfig(context_length=512, gpu_layers=-1))
    try:
        assert engine.loaded
        if not Engine.gpu_offload_supported():
            assert warnings and "no GPU support" in warnings[0]
    finally:
        engine.unload()


def test_threads_default_to_physical_cores():
    assert 1 <= physical_cores() <= (__import__("os").cpu_count() or 1)


def test_models_own_chat_template_is_used(engine):
    assert not engine.chat_template.is_fallback
    rendered = engine.render([ChatMessage("user", "Hi")])
    # SmolLM2's template adds its own system prompt when none is given.
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_fallback_template_when_the_model_has_none_or_a_broken_one():
    for source in (None, "", "{% for %}"):
        template = ChatTemplate(source)
        assert template.is_fallback
        assert template.render([{"role": "user", "content": "Hi"}]) == (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_template_that_raises_falls_back_for_that_prompt():
    template = ChatTemplate("{{ raise_exception('System role not supported') }}")
    assert not template.is_fallback
    assert template.render([{"role": "system", "content": "S"}]).startswith("<|im_start|>system")


def test_templates_run_sandboxed():
    from jinja2.exceptions import SecurityError

    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    # The sandbox refuses; the fallback renders instead of leaking Python internals.
    out = template.render([{"role": "user", "content": "x"}])
    assert "subclasses" not in out and "class" not in out
    assert SecurityError  # imported to document what the sandbox raises


def _reference_chain(engine, options):
    """The textbook order: penalties over the whole vocabulary, then the rest."""
    import llama_cpp

    loaded = engine._loaded
    params = llama_cpp.llama_sampler_chain_default_params()
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    init = llama_cpp.llama_sampler_init_penalties
    args = (64, options.repeat_penalty, options.frequency_penalty, options.presence_penalty)
    if len(init.argtypes) == 5:
        args = (llama_cpp.llama_vocab_n_tokens(loaded.vocab), *args)
    add(chain, init(*args))
    if options.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(options.seed))
    return chain


@pytest.mark.parametrize("options", [
    GenerationOptions(temperature=0, repeat_penalty=1.3),
    GenerationOptions(temperature=0, repeat_penalty=1.0),
    GenerationOptions(temperature=0, repeat_penalty=0.8),  # below 1: recent tokens are favoured
    GenerationOptions(temperature=0.9, top_k=40, repeat_penalty=1.3, seed=11),
    GenerationOptions(temperature=0.9, top_k=40, repeat_penalty=0.7, seed=11),  # the chain, below 1
    # OpenAI's penalties: lowering only (the cut applies), and raising (it must not).
    GenerationOptions(temperature=0, repeat_penalty=1.0, frequency_penalty=0.8, presence_penalty=0.5),
    GenerationOptions(temperature=0.9, top_k=40, repeat_penalty=1.3, frequency_penalty=-0.8, seed=11),
])
def test_the_fast_sampler_chain_picks_exactly_what_the_textbook_chain_picks(engine, options):
    import llama_cpp

    from desktop_app.core.sampling import build_sampler

    loaded = engine._loaded
    ctx = loaded.llm._ctx.ctx
    prompt = engine.tokenize(engine.render([SYSTEM, ChatMessage("user", "List ten animals, one per line.")]))

    def generate(sample, free):
        engine.clear_cache()
        array = (llama_cpp.llama_token * len(prompt))(*prompt)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(prompt))) == 0
        out, one = [], (llama_cpp.llama_token * 1)()
        for _ in range(150):  # past the 64-token penalty window, so tokens also leave it
            one[0] = sample()
            out.append(one[0])
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
        free()
        return out

    with engine._lock:
        sampler = build_sampler(loaded.vocab, options)
        fast = generate(lambda: sampler.sample(ctx), sampler.free)
        chain = _reference_chain(engine, options)
        reference = generate(lambda: llama_cpp.llama_sampler_sample(chain, ctx, -1),
                             lambda: llama_cpp.llama_sampler_free(chain))
        engine.clear_cache()
    assert fast == reference


def test_a_stop_before_generation_starts_is_not_lost(engine):
    options = GenerationOptions(temperature=0, max_tokens=50)
    messages = [SYSTEM, ChatMessage("user", "Tell me a story.")]
    engine.cancel()  # e.g. Stop pressed while the turn waited behind a model load
    first = list(engine.stream_chat(messages, options))[-1]
    assert first.finish_reason == "cancelled" and first.stats.generated_tokens == 0
    second = list(engine.stream_chat(messages, options))[-1]  # the Stop was consumed
    assert second.finish_reason in ("stop", "length") and second.stats.generated_tokens > 0
    engine.cancel()
    engine.reset_cancel()  # new work forgets a Stop nobody consumed
    assert list(engine.stream_chat(messages, options))[-1].stats.generated_tokens > 0


def test_templates_cannot_build_huge_texts():
    template = ChatTemplate("{{ 'x' * 10**10 }}{% for m in messages %}{{ m.content }}{% endfor %}")
    # The model's template is refused for this prompt; the fallback renders instead of freezing.
    assert template.render([{"role": "user", "content": "Hi"}]).startswith("<|im_start|>user")
    loops = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
    assert "<|im_start|>" in loops.render([{"role": "user", "content": "Hi"}])


def test_fitting_keeps_the_question_and_its_tool_exchange_together(engine):
    history = []
    for i in range(12):
        history += [ChatMessage("user", f"Old question {i} about the harbour and its many boats."),
                    ChatMessage("assistant", f"Old answer {i}: the harbour has boats of every size.")]
    call = [{"type": "function", "id": "c1", "function": {"name": "add", "arguments": {"a": 1}}}]
    tail = [ChatMessage("user", "What is 1 + 1?"), ChatMessage("assistant", "", tool_calls=call),
            ChatMessage("tool", "2 " * 60, name="add", tool_call_id="c1")]
    budget = len(engine.tokenize(engine.render([SYSTEM, *tail]))) + 10
    kept, _, tokens, dropped = engine.fit_messages([SYSTEM, *history, *tail], engine.context_length - budget,
                                                   keep_last=3)
    assert dropped == len(history) and kept[-3:] == tail and len(tokens) <= budget
    # Shortening keeps what a message is (its tool call), not only its text.
    kept, _, _, _ = engine.fit_messages([SYSTEM, *tail], engine.context_length - budget + 40, keep_last=3)
    assert kept[2].tool_calls == call and kept[3].name == "add" and len(kept[3].content) < len(tail[2].content)


def test_the_loaded_models_recommended_sampling(engine, model_path, tmp_path):
    """A model file's own ``general.sampling.*`` keys are read; the built-in model gets its preset."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    from desktop_app.core.models import BUILTIN_MODEL_SAMPLING

    assert engine.recommended_sampling() == BUILTIN_MODEL_SAMPLING
    assert Engine().recommended_sampling() == {}  # nothing loaded
    # The same model, as its makers might publish it with their recommended sampling.
    recommending = tmp_path / "recommending.gguf"
    writer = gguf.GGUFWriter(str(recommending), "llama")
    copy_with_new_metadata(gguf.GGUFReader(str(model_path)), writer, {
        "general.sampling.temp": MetadataDetails(gguf.GGUFValueType.FLOAT32, 0.6),
        "general.sampling.top_k": MetadataDetails(gguf.GGUFValueType.INT32, 20),
    }, [])
    other = Engine()
    other.load(recommending, LoadConfig(context_length=512))
    try:
        assert other.recommended_sampling() == {"temperature": pytest.approx(0.6), "top_k": 20}
    finally:
        other.unload()
