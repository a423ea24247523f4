"""Training examples: chats from a JSONL file, or turns picked from a conversation.

An example is a chat (a list of ``{"role", "content"}`` messages) with at least one answer of
the assistant; the model learns to write the assistant's messages, given what comes before.
A JSONL file holds one example per line, either ``{"messages": [...]}`` (the usual chat
format) or ``{"prompt": "...", "completion": "..."}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from desktop_app.api import ParleyError

__all__ = ["Chat", "DataError", "examples_from_conversation", "load_jsonl", "question_answer_pairs",
           "with_system_prompt"]

Chat = list[dict[str, str]]
_ROLES = ("system", "user", "assistant")


class DataError(ParleyError):
    """Training data that cannot be used (the message names the line and the problem)."""


def load_jsonl(path: Path | str) -> list[Chat]:
    """Read training chats from a JSONL file; DataError naming the first bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"The training file {path} does not exist.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not a UTF-8 text file; training data is JSON Lines.") from None
    except OSError as exc:
        raise DataError(f"{path.name} cannot be read: {exc.strerror or exc}.") from None
    chats: list[Chat] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name}, line {number}: not valid JSON ({exc.msg}).") from None
        try:
            chats.append(_chat_from_record(record))
        except DataError as exc:
            raise DataError(f"{path.name}, line {number}: {exc}") from None
    if not chats:
        raise DataError(f"{path.name} holds no examples. Write one JSON object per line, e.g. "
                        '{"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}')
    return chats


def _chat_from_record(record: Any) -> Chat:
    if isinstance(record, dict) and "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list):
            raise DataError('"messages" must be a list of {"role", "content"} objects.')
        chat = []
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise DataError('every message needs a "role" and a text "content".')
            role = message.get("role")
            if role not in _ROLES:
                raise DataError(f'the role {role!r} is not one of {", ".join(_ROLES)}.')
            chat.append({"role": role, "content": message["content"]})
    elif isinstance(record, dict) and "prompt" in record and "completion" in record:
        if not isinstance(record["prompt"], str) or not isinstance(record["completion"], str):
            raise DataError('"prompt" and "completion" must be text.')
        chat = [{"role": "user", "content": record["prompt"]},
                {"role": "assistant", "content": record["completion"]}]
    else:
        raise DataError('expected {"messages": [...]} or {"prompt": "...", "completion": "..."}.')
    if not any(m["role"] == "assistant" and m["content"].strip() for m in chat):
        raise DataError("the example has no assistant answer to learn.")
    if chat[0]["role"] == "assistant":
        raise DataError("the example starts with the assistant; the model learns answers to something.")
    return chat


def with_system_prompt(chats: list[Chat], system_prompt: str | None) -> list[Chat]:
    """Give chats without a system message ``system_prompt``: the model answers under one in the app."""
    if not system_prompt:
        return [list(chat) for chat in chats]
    return [list(chat) if chat and chat[0]["role"] == "system"
            else [{"role": "system", "content": system_prompt}, *chat] for chat in chats]


def examples_from_conversation(conversations: Any, conversation_id: int,
                               answer_ids: list[int] | None = None) -> list[Chat]:
    """Turn picked answers of a conversation into examples ("teach it this").

    Each picked answer becomes one example: the question before it and the answer. Without
    ``answer_ids`` every complete answer of the current branch is used.
    """
    history = conversations.messages(conversation_id)
    chats: list[Chat] = []
    for i, message in enumerate(history):
        if message.role != "assistant" or i == 0 or history[i - 1].role != "user":
            continue
        if answer_ids is not None and message.id not in answer_ids:
            continue
        if not message.content.strip():
            continue
        chats.append([{"role": "user", "content": history[i - 1].content},
                      {"role": "assistant", "content": message.content}])
    if not chats:
        raise DataError("The conversation has no answered questions to learn from"
                        + (" among the ones picked." if answer_ids is not None else "."))
    return chats


def question_answer_pairs(conversations: Any, conversation_id: int) -> list[tuple[int, str, str]]:
    """(answer id, question, answer) for every answered question of the current branch."""
    history = conversations.messages(conversation_id)
    return [(m.id, history[i - 1].content, m.content) for i, m in enumerate(history)
            if m.role == "assistant" and i and history[i - 1].role == "user" and m.content.strip()]
