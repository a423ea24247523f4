"""Finding out what an engine is and can do, from what it answers.

Every OpenAI-compatible server lists its models at ``GET /v1/models``. llama.cpp's
``llama-server`` also answers ``GET /props`` (its chat template, special tokens and context
size), ``GET /lora-adapters`` and ``POST /tokenize``: with those, Parley renders the exact
prompt itself and sends it raw, so templates, grammars and tool protocols work as they do on
the local engine. Other servers get chat messages and apply their own template.
"""

from __future__ import annotations

from typing import Any

from desktop_app_remote.client import Client, RemoteError
from desktop_app_remote.engines import EngineConfig, ServedModel, now

__all__ = ["LLAMA_SERVER", "OPENAI", "check_engine", "context_length_of"]

LLAMA_SERVER = "llama-server"
OPENAI = "openai"
#: A context size to assume when a server does not say (most chat models have at least this).
ASSUMED_CONTEXT = 4096


def context_length_of(entry: dict[str, Any], props: dict[str, Any] | None) -> int:
    """A model's context window from what the server said: llama-server's slot size, vLLM's
    ``max_model_len``, LM Studio's and others' ``context_length``; 0 when none says."""
    if props:
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx
    for key in ("max_model_len", "context_length", "max_context_length", "context_window"):
        value = entry.get(key)
        if isinstance(value, int) and value > 0:
            return value
    meta = entry.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("n_ctx_train"), int):
        return int(meta["n_ctx_train"])
    return 0


def check_engine(config: EngineConfig, client: Client) -> tuple[EngineConfig, dict[str, Any]]:
    """Ask the engine what it serves; returns the updated config and llama-server's ``/props``
    (empty for other servers). Raises RemoteError when it does not answer like an OpenAI server."""
    listing = client.get_json("/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        raise RemoteError(f"{config.name} answered /v1/models without a list of models (\"data\": [{{\"id\": …}}]). "
                          f"Is {config.url} an OpenAI-compatible server?")
    props = client.get_json("/props", missing_ok=True)
    is_llama = isinstance(props, dict) and "default_generation_settings" in props and "chat_template" in props
    props = props if is_llama else {}
    loras: list[dict[str, Any]] = []
    if is_llama:
        found = client.get_json("/lora-adapters", missing_ok=True)
        loras = [a for a in found if isinstance(a, dict) and "id" in a] if isinstance(found, list) else []
    models = [ServedModel(m["id"], context_length_of(m, props)) for m in data]
    capabilities = {
        # A raw prompt with Parley's own template: its tool protocol, grammars and stop strings hold.
        "raw_prompt": is_llama, "grammar": is_llama, "tokenize": is_llama, "json_schema": True,
        "lora": [{"id": a["id"], "path": str(a.get("path", "")), "scale": a.get("scale", 0.0)} for a in loras],
        "tools": True,
        "build": str(props.get("build_info", "")) if is_llama else "",
    }
    updated = EngineConfig(config.name, config.url, has_key=config.has_key, kind=LLAMA_SERVER if is_llama else OPENAI,
                           models=models, capabilities=capabilities, checked=now(), problem="")
    return updated, props
