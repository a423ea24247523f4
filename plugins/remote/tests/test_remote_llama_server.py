"""Parley chatting through a real llama-server: the same answers as the local engine, Stop,
tools, JSON schemas, documents, LoRA scales, and a server that dies and comes back."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from remote_servers import ALIAS, ENGINE, REF

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"
CORPUS = Path(__file__).resolve().parents[3] / "tests" / "data" / "docs"


def local_answer(context, question=QUESTION, **kwargs):
    """The same question on the local engine, for comparison."""
    context.load_model(None)
    conversation = context.store.create_conversation("local")
    return context.chat.send(conversation.id, question, **kwargs)


def test_the_engine_is_checked_and_its_model_joins_the_picker_list(remote, llama_server):
    from desktop_app_remote import state

    engine = state.store.get(ENGINE)
    assert engine.kind == "llama-server" and [m.id for m in engine.models] == [ALIAS]
    assert engine.models[0].context_length == 2048 and engine.capabilities["grammar"] is True
    listed = {m["path"]: m for m in remote.library()}
    assert listed[REF]["loaded"] is True and listed[REF]["engine"] == ENGINE
    assert remote.engine.context_length == 2048 and "box (llama-server" in remote.engine.describe()


def test_an_answer_streams_and_is_the_local_engines_answer_word_for_word(remote):
    from desktop_app.core.chat import TurnFinished

    pieces = []
    conversation = remote.store.create_conversation("remote")
    outcome = remote.chat.send(conversation.id, QUESTION,
                               on_event=lambda e: pieces.append(e.text) if hasattr(e, "text") and
                               type(e).__name__ == "TokenEvent" else None)
    assert isinstance(outcome, TurnFinished) and outcome.message.status == "complete"
    assert len(pieces) > 3 and "".join(pieces).strip() == outcome.message.content.strip()
    trace = remote.store.get_trace(outcome.message.id)
    assert trace["prompt"].startswith("<|im_start|>system\n")  # rendered here with the server's template
    stats = outcome.message.stats
    assert stats["generated_tokens"] >= len(pieces) and stats["time_to_first_token"] > 0
    assert stats["prompt_tokens"] == len(remote.engine.active._tokenize(
        remote.engine.active._loaded, remote.engine.active.client(ENGINE), trace["prompt"]))
    local = local_answer(remote)
    assert outcome.message.content == local.message.content


def test_stop_ends_the_answer_and_the_server_is_free_for_the_next(remote):
    engine = remote.engine
    from desktop_app.api import ChatMessage, GenerationOptions

    options = GenerationOptions(temperature=0.0, max_tokens=400, repeat_penalty=1.0)
    events = []
    for event in engine.stream_chat([ChatMessage("user", "Write a very long story about a dragon.")], options):
        events.append(event)
        if len(events) == 3:
            engine.cancel()
    done = events[-1]
    assert type(done).__name__ == "DoneEvent" and done.finish_reason == "cancelled"
    assert len(events) < 40  # the first pieces already on their way, then nothing
    assert not engine.cancel_event.is_set()
    again = list(engine.stream_chat([ChatMessage("user", QUESTION)], GenerationOptions(temperature=0.0, max_tokens=8)))
    assert again[-1].finish_reason in ("stop", "length") and again[-1].text


def test_a_json_schema_answer_follows_the_schema(remote):
    from desktop_app.api import ChatMessage, GenerationOptions

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    options = GenerationOptions(temperature=0.0, max_tokens=60, json_schema=schema)
    done = list(remote.engine.stream_chat([ChatMessage("user", "Name a city and its country as JSON.")], options))[-1]
    value = json.loads(done.text)
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())


def test_a_tool_call_runs_through_the_grammar_on_the_server(remote):
    from desktop_app.core.chat import TurnFinished

    conversation = remote.store.create_conversation("math")
    outcome = remote.chat.send(conversation.id, "What is 17.5% of 2,340?",
                               plugin_options={"tools": {"tools": ["calculator"], "tool_choice": "required"}})
    assert isinstance(outcome, TurnFinished)
    trace = remote.store.get_trace(outcome.message.id)
    calls = [e["content"] for e in trace["entries"] if e["kind"] == "tool_call"]
    assert calls and calls[0]["tool"] == "calculator" and calls[0]["decision"] == "allowed"
    assert isinstance(calls[0]["arguments"]["expression"], str)


def test_a_documents_answer_cites_its_sources(remote, tmp_path):
    from desktop_app_local_docs import state as docs

    shutil.copytree(CORPUS / "projects", tmp_path / "corpus" / "projects")
    docs.index.add_collection("work", [str(tmp_path / "corpus")])
    docs.index.index("work")
    conversation = remote.store.create_conversation("docs")
    outcome = remote.chat.send(conversation.id, "Who is the lead engineer of Project Orca?",
                               plugin_options={"local_docs": {"collections": ["work"]}})
    trace = remote.store.get_trace(outcome.message.id)
    assert "Amara Osei" in trace["prompt"]
    sources = [e for e in trace["entries"] if e["plugin"] == "local_docs"]
    assert sources, trace["entries"]


def test_a_lora_adapter_acts_on_the_server_at_each_scale_as_it_does_here(remote, lora_adapter):
    from desktop_app.api import Adapter, ChatMessage, GenerationOptions

    options = GenerationOptions(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
    messages = [ChatMessage("user", QUESTION)]

    def answers(engine):
        found = {}
        for scale in (0.0, 0.5, 1.0):
            engine.load_adapter(lora_adapter)
            engine.set_adapters([Adapter("strong", str(lora_adapter), scale)] if scale else [])
            found[scale] = list(engine.stream_chat(messages, options))[-1].text
        engine.set_adapters([])
        return found

    on_server = answers(remote.engine)
    remote.load_model(None)
    here = answers(remote.engine)
    assert on_server == here
    assert on_server[1.0] != on_server[0.0]


def test_an_adapter_the_server_lacks_is_refused_by_name(remote, tmp_path):
    from desktop_app.api import EngineError

    from desktop_app.api import Adapter

    with pytest.raises(EngineError, match="has no adapter other.gguf .*--lora other.gguf"):
        remote.engine.load_adapter(tmp_path / "other.gguf")
    with pytest.raises(EngineError, match="has no adapter other.gguf"):
        remote.engine.set_adapters([Adapter("other", str(tmp_path / "other.gguf"), 1.0)])
    assert remote.plugin_context("lora").model.adapter_problem(tmp_path / "other.gguf").startswith("box has no")


def test_a_server_killed_mid_answer_keeps_the_partial_answer_and_the_next_turn_works_after_a_restart(remote, llama_server):
    from desktop_app.core.chat import TurnFailed, TurnFinished

    conversation = remote.store.create_conversation("crash")
    seen = threading.Event()

    def on_event(event):
        if type(event).__name__ == "TokenEvent" and not seen.is_set():
            seen.set()
            llama_server.kill()

    remote.settings.set("generation.max_tokens", 300)
    outcome = remote.chat.send(conversation.id, "Write a very long story about a dragon.", on_event=on_event)
    assert isinstance(outcome, TurnFailed), outcome
    assert "broke in the middle of the answer" in outcome.error or "Cannot reach" in outcome.error
    messages = remote.store.all_messages(conversation.id)
    assert messages[-1].role == "assistant" and messages[-1].content and messages[-1].status != "complete"
    llama_server.start()
    remote.settings.set("generation.max_tokens", 8)
    outcome = remote.chat.send(conversation.id, QUESTION)
    assert isinstance(outcome, TurnFinished), outcome


def test_templates_and_strategies_work_unchanged_over_the_remote_engine(remote):
    from desktop_app.core.chat import TurnFinished

    conversation = remote.store.create_conversation("extract")
    outcome = remote.chat.send(conversation.id, "Maria is 34 and lives in Porto.",
                               plugin_options={"prompt_templates": {"template": "JSON extractor"}})
    assert isinstance(outcome, TurnFinished)
    value = json.loads(outcome.message.content)  # the template's schema, enforced on the server
    assert set(value) == {"name", "age", "city"} and isinstance(value["age"], int)
    conversation = remote.store.create_conversation("vote")
    outcome = remote.chat.send(conversation.id, "Say yes or no.", options={"max_tokens": 8, "seed": 3},
                               plugin_options={"prompt_templates": {"strategy": "self-consistency", "samples": 3}})
    assert isinstance(outcome, TurnFinished) and len(outcome.message.stats["samples"]) == 3
    assert outcome.message.stats["strategy"] == "self-consistency"


def test_logit_bias_and_penalties_reach_the_server(remote):
    from desktop_app.api import ChatMessage, GenerationOptions

    messages = [ChatMessage("user", QUESTION)]
    plain = list(remote.engine.stream_chat(messages, GenerationOptions(temperature=0.0, max_tokens=8)))[-1].text
    client = remote.engine.active.client(ENGINE)
    first = client.post_json("/tokenize", {"content": plain.split()[0], "add_special": False})["tokens"][0]
    banned = list(remote.engine.stream_chat(messages, GenerationOptions(
        temperature=0.0, max_tokens=8, logit_bias={first: -100.0})))[-1].text
    assert banned and not banned.startswith(plain.split()[0])


def test_stop_from_another_thread_ends_the_answer_even_before_its_first_token(remote):
    """The window's Stop comes from the GUI thread, while the engine thread waits on the server."""
    from desktop_app.api import ChatMessage, GenerationOptions

    engine = remote.engine
    long_prompt = "Summarise this. " + " ".join(f"Line {i} says the harbour opens at dawn." for i in range(150))
    events = []
    started = threading.Event()

    def write():
        started.set()
        for event in engine.stream_chat([ChatMessage("user", long_prompt)],
                                        GenerationOptions(temperature=0.0, max_tokens=400)):
            events.append(event)

    thread = threading.Thread(target=write)
    thread.start()
    started.wait()
    engine.cancel()  # at once: the prompt is still being sent or read, whichever comes first
    thread.join(timeout=60)
    assert not thread.is_alive()
    done = events[-1]
    assert type(done).__name__ == "DoneEvent" and done.finish_reason == "cancelled", done
    assert done.prompt.startswith("<|im_start|>")  # the trace keeps the prompt of a stopped answer
    assert len(events) < 40 and not engine.cancel_event.is_set()
    again = list(engine.stream_chat([ChatMessage("user", QUESTION)], GenerationOptions(temperature=0.0, max_tokens=8)))
    assert again[-1].finish_reason in ("stop", "length") and again[-1].text


def test_a_key_added_while_the_model_is_loaded_is_used_from_the_next_turn(context, keyed_server):
    from desktop_app.api import ChatMessage, GenerationOptions
    from desktop_app_remote import state
    from desktop_app_remote.engines import add_engine

    add_engine(state.store, "keyed", keyed_server.url, "wrong-key")
    with pytest.raises(Exception, match="refused the API key"):
        context.load_model("remote:keyed/smollm2")
    add_engine(state.store, "keyed", keyed_server.url, "sesame-123", replace=True)
    context.load_model("remote:keyed/smollm2")
    add_engine(state.store, "keyed", keyed_server.url, "wrong-again", replace=True)
    failed = list(context.engine.stream_chat([ChatMessage("user", "Hi")], GenerationOptions(max_tokens=4)))[-1]
    assert type(failed).__name__ == "ErrorEvent" and "refused the API key" in failed.message
    add_engine(state.store, "keyed", keyed_server.url, "sesame-123", replace=True)
    done = list(context.engine.stream_chat([ChatMessage("user", "Hi")], GenerationOptions(max_tokens=4)))[-1]
    assert type(done).__name__ == "DoneEvent" and done.text
