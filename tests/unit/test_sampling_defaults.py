"""The model's recommended sampling reaches each turn, unless the user chose their own."""

from desktop_app.core.chat import ChatService
from desktop_app.core.settings import Settings
from desktop_app.core.store import Store
from desktop_app.testing import FakeEngine


def service(paths, recommended):
    engine = FakeEngine().enqueue("One.", "Two.", "Three.")
    engine.recommended_sampling = lambda: dict(recommended)
    store = Store(paths.database_file)
    return ChatService(store, engine, Settings.load(paths.settings_file)), engine, store


def test_a_turn_uses_the_recommendation_and_regenerate_samples_another_answer(paths):
    chat, engine, store = service(paths, {"temperature": 0.0, "repeat_penalty": 1.1})
    conversation = store.create_conversation()
    chat.send(conversation.id, "Hi")
    first = engine.history[-1].options
    assert first.temperature == 0.0 and first.repeat_penalty == 1.1
    # Asked again, greedy would give the same words: the general settings sample a new answer.
    chat.regenerate(conversation.id)
    again = engine.history[-1].options
    assert again.temperature == chat.settings.get("generation.temperature") > 0
    store.close()


def test_the_users_own_choice_wins_also_on_regenerate(paths):
    chat, engine, store = service(paths, {"temperature": 0.6, "top_k": 20})
    chat.settings.set("generation.temperature", 0.0)
    conversation = store.create_conversation()
    chat.send(conversation.id, "Hi")
    assert (engine.history[-1].options.temperature, engine.history[-1].options.top_k) == (0.0, 20)
    chat.regenerate(conversation.id)
    assert engine.history[-1].options.temperature == 0.0  # the user asked for greedy: kept
    store.close()
