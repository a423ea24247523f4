"""Profiles: a conversation's setup served as ``profile:NAME``, with the whole turn pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from desktop_app.cli import main

CORPUS = Path(__file__).resolve().parents[3] / "tests" / "data" / "docs"


@pytest.fixture
def handbook(app_context, tmp_path):
    """A document collection "handbook" and a conversation that searches it."""
    from desktop_app_local_docs import state as docs

    shutil.copytree(CORPUS / "projects", tmp_path / "Handbook" / "projects")
    docs.index.add_collection("handbook", [str(tmp_path / "Handbook")])
    docs.index.index("handbook")
    conversation = app_context.store.create_conversation(
        "Handbook questions", meta={"local_docs": {"collections": ["handbook"]}})
    return conversation.id


def save(server_context, name, conversation_id, **kwargs):
    from desktop_app_server import state
    from desktop_app_server.profiles import profile_from_conversation

    profile = profile_from_conversation(server_context, name, conversation_id, **kwargs)
    return state.controller.gateway.profiles.save(profile)


def test_a_profile_with_documents_answers_with_its_sources_and_keeps_the_trace(controller, client, server_context,
                                                                               app_context, handbook):
    save(server_context, "handbook-assistant", handbook, store_conversations=True)
    assert "profile:handbook-assistant" in [m.id for m in client.models.list().data]
    response = client.chat.completions.create(
        model="profile:handbook-assistant", max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": "Who is the lead engineer of Project Orca?"}])
    assert response.choices[0].message.content and response.choices[0].finish_reason in ("stop", "length")
    parley = response.model_extra["parley"]
    assert parley["profile"] == "handbook-assistant" and "local_docs" in parley["plugins"]
    assert parley["sources"] and parley["sources"][0]["index"] == 1
    assert any("orca" in s["source"].lower() or "Orca" in s["text"] for s in parley["sources"])
    trace = app_context.store.get_trace(parley["message_id"])
    assert [e for e in trace["entries"] if e["kind"] == "context"]  # the sources are in the stored trace
    assert "Use the following sources" in trace["prompt"]
    kept = app_context.store.get_conversation(parley["conversation_id"])
    assert kept.meta["local_docs"] == {"collections": ["handbook"]}


def test_a_profile_streams_and_keeps_nothing_by_default(controller, client, server_context, app_context, handbook):
    save(server_context, "quiet", handbook)
    before = len(app_context.store.list_conversations())
    stream = client.chat.completions.create(model="profile:quiet", max_tokens=12, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": "When does Project Heron launch?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["parley"]["sources"]
    assert chunks[-1].model_extra["parley"]["conversation_id"] is None
    assert len(app_context.store.list_conversations()) == before


def test_profiles_refuse_client_tools_and_unknown_names(controller, client, server_context, handbook):
    import openai

    save(server_context, "docs", handbook)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError, match="brings its own tools"):
        client.chat.completions.create(model="profile:docs", tools=[tool],
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="no profile called 'nope'.*docs"):
        client.chat.completions.create(model="profile:nope", messages=[{"role": "user", "content": "hi"}])


def test_profiles_from_the_command_line(paths, capsys):
    from desktop_app.context import build_context

    app = build_context(paths)
    conversation = app.store.create_conversation("Translations", system_prompt="Be brief.", meta={
        "prompt_templates": {"template": "Translator", "variables": {"language": "German"}}})
    app.close()
    assert main(["profiles", "save", "german", "-c", str(conversation.id)]) == 0
    assert "profile:german" in capsys.readouterr().out
    assert main(["profiles", "save", "german", "-c", str(conversation.id)]) == 1
    assert "already is a profile called 'german'" in capsys.readouterr().err
    assert main(["profiles", "save", "bad name", "-c", str(conversation.id)]) == 1
    assert "cannot be a profile name" in capsys.readouterr().err
    assert main(["profiles", "save", "x", "-c", "999"]) == 1
    assert "no conversation 999" in capsys.readouterr().err
    assert main(["profiles", "list"]) == 0
    assert "profile:german" in capsys.readouterr().out
    assert main(["profiles", "show", "german"]) == 0
    shown = capsys.readouterr().out
    assert "Translator" in shown and "Be brief." in shown
    assert main(["profiles", "delete", "german"]) == 0
    assert main(["profiles", "show", "german"]) == 1
    assert "There is no profile called 'german'" in capsys.readouterr().err


def test_a_damaged_profiles_file_is_kept_aside(tmp_path):
    from desktop_app_server.profiles import Profile, ProfileStore

    path = tmp_path / "api-profiles.json"
    path.write_text("{not json")
    store = ProfileStore(path)
    assert store.all() == [] and "kept as" in store.warnings[0]
    assert list(tmp_path.glob("api-profiles.json.corrupt-*"))
    store.save(Profile("fresh"))
    assert [p.name for p in ProfileStore(path).all()] == ["fresh"]


def test_a_profile_that_stores_conversations_keeps_nothing_of_a_failed_turn(scripted):
    """No question without its answer stays behind: a failed turn's conversation goes, streamed or
    not; a whole one is kept."""
    import openai

    from desktop_app_server.profiles import Profile

    server = scripted()
    server.controller.gateway.profiles.save(Profile("kept", store_conversations=True))
    server.engine.enqueue(RuntimeError("The model ran out of memory."),
                          RuntimeError("The model ran out of memory."), "Fine, thanks.")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": "How are you?"}]
    with pytest.raises(openai.InternalServerError, match="ran out of memory"):
        client.chat.completions.create(model="profile:kept", messages=messages)
    assert server.app.store.list_conversations() == []
    with pytest.raises(openai.APIError, match="ran out of memory"):
        list(client.chat.completions.create(model="profile:kept", messages=messages, stream=True))
    assert server.app.store.list_conversations() == []
    reply = client.chat.completions.create(model="profile:kept", messages=messages)
    kept = reply.model_extra["parley"]["conversation_id"]
    assert [m.content for m in server.app.store.history(kept)] == ["Hello", "Hi!", "How are you?", "Fine, thanks."]
    assert [c.id for c in server.app.store.list_conversations()] == [kept]


SAMPLES = ["3 + 4 is 8.\nFinal answer: 8", "3 plus 4 makes 7.\nFinal answer: 7", "Final answer: 7.",
           "Adding gives 8.\nfinal answer: 8", "Counting on from 3: 7.\nFINAL ANSWER: 7"]


def test_a_strategy_streams_only_its_answer_as_content(scripted):
    """Self-consistency samples five answers (scripted, so the vote is known): the client's
    content is the chosen answer alone; the samples and "Sample 2 of 5…" come in parley.progress,
    the vote in parley.strategy."""
    import openai

    from desktop_app_server.profiles import Profile

    server = scripted()
    server.controller.gateway.profiles.save(
        Profile("voter", plugins={"prompt_templates": {"template": "Self-consistency reasoner"}}))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    question = [{"role": "user", "content": "What is 3 + 4?"}]

    server.engine.enqueue(*SAMPLES)
    chunks = list(client.chat.completions.create(model="profile:voter", messages=question, stream=True, seed=1))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == SAMPLES[1]  # the first sample that voted for the winner, and nothing else
    progress = "".join((c.model_extra.get("parley") or {}).get("progress", "") for c in chunks)
    assert "Sample 1 of 5" in progress and "Sample 5 of 5" in progress and SAMPLES[3] in progress
    assert chunks[-1].choices[0].finish_reason == "stop"
    strategy = chunks[-1].model_extra["parley"]["strategy"]
    assert strategy["name"] == "self-consistency" and strategy["votes"] == {"7": 3, "8": 2}
    assert strategy["samples"] == SAMPLES and "3 of 5 samples agree" in strategy["note"]

    server.engine.enqueue(*SAMPLES)
    reply = client.chat.completions.create(model="profile:voter", messages=question, seed=1)
    assert reply.choices[0].message.content == SAMPLES[1]
    assert reply.model_extra["parley"]["strategy"]["votes"] == {"7": 3, "8": 2}


def test_text_completions_refuse_a_profile_instead_of_answering_without_it(scripted):
    import openai

    from desktop_app_server.profiles import Profile

    server = scripted()
    server.controller.gateway.profiles.save(Profile("docs"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="/v1/chat/completions") as raised:
        client.completions.create(model="profile:docs", prompt="Hi")
    assert raised.value.param == "model"
