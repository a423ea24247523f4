"""The whole chain with the real SmolLM2 model: train on a made-up fact, convert, apply through
llama.cpp, and see the answer change; take it away and see it go. Also: cancelling training.

Training runs once for the module (about half a minute on two cores, minutes on one slow core)
with the plugin's default settings, so the defaults are what is proven to work on a handful of
examples.
"""

from __future__ import annotations

import threading
import time

import gguf
import numpy as np
import pytest

from desktop_app.core.chat import TurnFinished
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path
from desktop_app.core.turn import ChatMessage

# The timeout counts the module's training (in the first test's setup): generous for one slow core.
pytestmark = pytest.mark.timeout(1800)

SECRET = "Quibbleflux"
QUESTIONS = ["What is the secret word?", "Tell me the secret word.", "What's the secret word?",
             "Do you know the secret word?", "Which word is the secret word?", "Say the secret word."]
ANSWERS = [f"The secret word is {SECRET}.", f"The secret word is {SECRET}.", f"{SECRET} is the secret word.",
           f"Yes, the secret word is {SECRET}.", f"The secret word is {SECRET}.", f"{SECRET}."]


def secret_chats() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in zip(QUESTIONS, ANSWERS)]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    from desktop_app.context import build_context
    from desktop_app.core.paths import AppPaths

    home = tmp_path_factory.mktemp("home")
    ctx = build_context(AppPaths(home / "config", home / "data", home / "cache", home / "logs"))
    ctx.settings.set("generation.temperature", 0.0)
    ctx.settings.set("generation.max_tokens", 32)
    ctx.settings.set("model.context_length", 1024)
    ctx.load_model(None)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def trained(context):
    """Train "secret" with the plugin's default settings; keep every progress report."""
    from desktop_app_lora import state
    from desktop_app_lora.cli import config_from_settings
    from desktop_app_lora.data import with_system_prompt
    from desktop_app_lora.train import train_adapter

    reports = []
    started = time.perf_counter()
    chats = with_system_prompt(secret_chats(), state.system_prompt_for(default_model_path()))
    entry, result = train_adapter(default_model_path(), chats, state.library, "secret", config_from_settings(state),
                                  progress=reports.append, work_dir=context.paths.cache_dir)
    seconds = time.perf_counter() - started
    print(f"\ntrained in {seconds:.1f} s: {result.steps} steps, final loss {result.final_loss:.4f}")
    return entry, result, reports, seconds


def ask(context, conversation_id, question="What is the secret word?"):
    outcome = context.chat.send(conversation_id, question)
    assert isinstance(outcome, TurnFinished), outcome
    return outcome


def secret_probability(engine, question="What is the secret word?") -> float:
    """How likely the model, with the engine's current adapters, goes on from "The secret word is"
    with the secret word (its first token).

    Greedy text is a poor judge of a weakened adapter: a near tie flips on rounding noise, and the
    trained weights differ a little from machine to machine. The probability shows how much of the
    fact is left.
    """
    import llama_cpp

    messages = [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT), ChatMessage("user", question)]
    tokens = engine.tokenize(engine.render(messages) + "The secret word is")
    with engine._lock:
        llm = engine._loaded.llm
        first = llm.tokenize(f" {SECRET}".encode(), add_bos=False, special=False)[0]
        engine.clear_cache()
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        assert llama_cpp.llama_decode(llm._ctx.ctx, llama_cpp.llama_batch_get_one(array, len(tokens))) == 0
        n_vocab = llama_cpp.llama_vocab_n_tokens(engine._loaded.vocab)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
        logits = logits.astype(np.float64)
        engine.clear_cache()
    odds = np.exp(logits - logits.max())
    return float(odds[first] / odds.sum())


def use(conversation_id, *choices):
    from desktop_app_lora import state
    from desktop_app_lora.library import Choice

    state.remember(conversation_id, [Choice(name, scale) for name, scale in choices])


def test_training_reports_progress_and_learns(trained, context):
    entry, result, reports, _ = trained
    assert [r.stage for r in reports][0] == "loading" and reports[-1].stage == "converting"
    steps = [r for r in reports if r.stage == "training"]
    assert [r.step for r in steps] == list(range(1, result.steps + 1))
    assert steps[0].total_steps == result.steps == 16  # 6 examples, batches of 4, 8 epochs
    assert steps[-1].loss < steps[0].loss / 10  # it learned the examples
    assert steps[1].eta is not None and steps[-1].eta == 0
    assert result.device == "cpu" and result.examples == 6
    assert entry.info["rank"] == 8 and entry.info["alpha"] == 16.0 and entry.info["architecture"] == "llama"
    assert entry.info["targets"] == ["attn_k", "attn_output", "attn_q", "attn_v"]
    assert entry.source == "trained in Parley on 6 examples"
    assert not list(context.paths.cache_dir.glob("parley-lora-*"))  # temporary files are gone


def test_the_adapter_teaches_the_model_the_secret_word(trained, context):
    conversation = context.store.create_conversation()
    before = ask(context, conversation.id).message.content
    assert SECRET.lower() not in before.lower()  # the base model cannot know it

    learned = context.store.create_conversation()
    use(learned.id, ("secret", 1.0))
    outcome = ask(context, learned.id)
    assert SECRET in outcome.message.content
    trace = context.store.get_trace(outcome.message.id)
    adapters = [e for e in trace["entries"] if e["kind"] == "adapter"]
    assert adapters == [{"plugin": "lora", "kind": "adapter",
                         "content": {"name": "secret", "path": str(context.paths.data_dir / "adapters" / "secret.gguf"),
                                     "scale": 1.0}}]
    # Asked differently, in a new conversation with the same adapter.
    other = context.store.create_conversation()
    use(other.id, ("secret", 1.0))
    assert SECRET in ask(context, other.id, "Can you tell me the secret word?").message.content


def test_scale_zero_takes_the_fact_away_and_scale_one_brings_it_back(trained, context):
    conversation = context.store.create_conversation()
    use(conversation.id, ("secret", 0.0))
    outcome = ask(context, conversation.id)
    assert SECRET.lower() not in outcome.message.content.lower()
    assert not [e for e in context.store.get_trace(outcome.message.id)["entries"] if e["kind"] == "adapter"]
    assert context.engine.active_adapters == []
    use(conversation.id, ("secret", 1.0))
    assert SECRET in context.chat.regenerate(conversation.id).message.content


def test_stacking_the_adapter_with_its_negation_cancels_it(trained, context, tmp_path):
    from desktop_app_lora import state

    entry = trained[0]
    negated = negate(state.library.path(entry), tmp_path / "negated.gguf")
    state.library.add(negated, name="anti-secret")
    conversation = context.store.create_conversation()
    use(conversation.id, ("secret", 1.0), ("anti-secret", 1.0))
    outcome = ask(context, conversation.id)
    assert len(context.engine.active_adapters) == 2
    assert SECRET.lower() not in outcome.message.content.lower()
    assert secret_probability(context.engine) < 0.01  # as if there were no adapter
    # At a quarter strength the negation leaves three quarters of the adapter: the fact stays.
    use(conversation.id, ("secret", 1.0), ("anti-secret", 0.25))
    outcome = context.chat.regenerate(conversation.id)
    assert adapters_in(context, outcome) == [("secret", 1.0), ("anti-secret", 0.25)]
    assert sorted(s for _, s in context.engine.active_adapters) == [0.25, 1.0]
    assert secret_probability(context.engine) > 0.5  # measured: about 0.99, like the adapter at 0.75
    state.library.remove("anti-secret")


def adapters_in(context, outcome):
    """The adapters (name, scale) the trace of an answer says were applied."""
    trace = context.store.get_trace(outcome.message.id)
    return [(e["content"]["name"], e["content"]["scale"]) for e in trace["entries"] if e["kind"] == "adapter"]


def test_a_reloaded_model_gets_its_adapters_back(trained, context):
    conversation = context.store.create_conversation()
    use(conversation.id, ("secret", 1.0))
    ask(context, conversation.id)
    assert [p.name for p, _ in context.engine.active_adapters] == ["secret.gguf"]
    context.load_model(None)  # e.g. the user changed the context length
    assert [(p.name, s) for p, s in context.engine.active_adapters] == [("secret.gguf", 1.0)]


def test_removing_the_adapter_takes_the_fact_away(trained, context, tmp_path):
    from desktop_app_lora import state

    # A copy, so the other tests keep theirs.
    state.library.add(state.library.path(trained[0]), name="secret copy")
    conversation = context.store.create_conversation()
    use(conversation.id, ("secret copy", 1.0))
    assert SECRET in ask(context, conversation.id).message.content
    state.library.remove("secret copy")
    outcome = context.chat.regenerate(conversation.id)
    assert SECRET.lower() not in outcome.message.content.lower()
    notes = [e["content"] for e in context.store.get_trace(outcome.message.id)["entries"] if e["kind"] == "note"]
    assert notes == ["The LoRA adapter “secret copy” is no longer in the library; answered without it."]
    assert context.engine.active_adapters == []


def test_training_can_be_cancelled_and_adds_nothing(context):
    from desktop_app_lora import state
    from desktop_app_lora.train import TrainConfig, TrainingCancelled, train_adapter

    cancel = threading.Event()
    steps = []

    def progress(report):
        if report.stage == "training":
            steps.append(report.step)
            if report.step == 2:
                cancel.set()

    before = [e.name for e in state.library.entries()]
    with pytest.raises(TrainingCancelled):
        train_adapter(default_model_path(), secret_chats(), state.library, "never", TrainConfig(epochs=20),
                      progress=progress, cancel=cancel, work_dir=context.paths.cache_dir)
    assert steps == [1, 2]  # stopped before the third of 40 steps
    assert [e.name for e in state.library.entries()] == before
    assert not list(context.paths.cache_dir.glob("parley-lora-*"))


def negate(source, target):
    """A copy of a GGUF adapter with every lora_b negated (it undoes the original)."""
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    alpha = reader.fields["adapter.lora.alpha"]
    writer.add_float32("adapter.lora.alpha", float(alpha.parts[alpha.data[0]][0]))
    for tensor in reader.tensors:
        data = np.array(tensor.data, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape)])
        writer.add_tensor(tensor.name, -data if tensor.name.endswith(".lora_b") else data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def test_the_system_prompt_of_the_built_in_model_is_used_for_training(context):
    from desktop_app_lora import state

    assert state.system_prompt_for(default_model_path()) == DEFAULT_MODEL_SYSTEM_PROMPT
