"""The plugin API: the only module a plugin needs to import.

A minimal plugin::

    from desktop_app.api import hookimpl

    @hookimpl
    def prepare_turn(turn):
        turn.add_system("Answer in French.")

Everything here is kept stable: names are only added, never renamed.
"""

from desktop_app.core.chat_template import bounded_sandbox
from desktop_app.core.errors import EngineError, ModelFileError, ModelLoadError, ParleyError
from desktop_app.core.models import GGUFHeader, check_gguf_file, check_lora_file
from desktop_app.core.paths import atomic_write_text, move_aside
from desktop_app.core.plugin_state import conversation_choice, remember_choice
from desktop_app.core.settings import Option
from desktop_app.core.tools import (
    MAX_RESULT_CHARS,
    ToolCall,
    ToolError,
    ToolOutcome,
    check_tool,
    public_schema,
    run_tool,
    tool_from_function,
    validate_arguments,
)
from desktop_app.core.turn import (
    Adapter,
    ChatMessage,
    ContextBlock,
    GenerationOptions,
    Tool,
    TraceEntry,
    Turn,
    TurnResult,
)
from desktop_app.hookspecs import hookimpl

__all__ = [
    "MAX_RESULT_CHARS",
    "Adapter",
    "ChatMessage",
    "ContextBlock",
    "EngineError",
    "GGUFHeader",
    "GenerationOptions",
    "ModelFileError",
    "ModelLoadError",
    "Option",
    "ParleyError",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolOutcome",
    "TraceEntry",
    "Turn",
    "TurnResult",
    "atomic_write_text",
    "bounded_sandbox",
    "check_tool",
    "check_gguf_file",
    "check_lora_file",
    "conversation_choice",
    "hookimpl",
    "move_aside",
    "public_schema",
    "remember_choice",
    "run_tool",
    "tool_from_function",
    "validate_arguments",
]
