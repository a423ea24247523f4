"""The plugin API: the only module a plugin needs to import.

A minimal plugin::

    from desktop_app.api import hookimpl

    @hookimpl
    def prepare_turn(turn):
        turn.add_system("Answer in French.")

A plugin's hooks get what they work on (a turn, a register function); everything else of
the app comes through the plugin's :class:`PluginContext`, handed to ``app_started``.
Everything here is kept stable: names are only added, never renamed.
"""

from desktop_app.core.backend import Backend, BackendModel
from desktop_app.core.chat_template import ChatTemplate, bounded_sandbox
from desktop_app.core.context_fit import fit_to_context
from desktop_app.core.downloads import DownloadError, DownloadManager, DownloadState, DownloadStatus
from desktop_app.core.errors import EngineError, ModelFileError, ModelLoadError, ParleyError
from desktop_app.core.events import DoneEvent, ErrorEvent, GenerationStats, TokenEvent
from desktop_app.core.hub import (
    Hub,
    HubError,
    HubGatedError,
    HubRepoNotFoundError,
    HubTokenError,
    HubUnreachableError,
    RepoDetails,
    RepoSummary,
    hub_endpoint,
)
from desktop_app.core.hub_files import HubFile, HubModelFile
from desktop_app.core.hub_fit import FitVerdict, fit_verdict
from desktop_app.core.models import (
    GGUFHeader,
    GGUFHeaderIncompleteError,
    check_gguf_file,
    check_lora_file,
    lora_header_problem,
    read_gguf_header,
)
from desktop_app.core.paths import atomic_write_text, move_aside
from desktop_app.core.plugin_context import (
    ConversationChoice,
    Conversations,
    ModelAccess,
    PluginContext,
    PluginSettings,
    Registered,
)
from desktop_app.core.settings import Option
from desktop_app.core.store import Conversation, Message
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
    "Backend",
    "BackendModel",
    "ChatMessage",
    "ChatTemplate",
    "ContextBlock",
    "Conversation",
    "ConversationChoice",
    "Conversations",
    "DoneEvent",
    "DownloadError",
    "DownloadManager",
    "DownloadState",
    "DownloadStatus",
    "EngineError",
    "ErrorEvent",
    "FitVerdict",
    "GGUFHeader",
    "GGUFHeaderIncompleteError",
    "GenerationOptions",
    "GenerationStats",
    "Hub",
    "HubError",
    "HubFile",
    "HubGatedError",
    "HubModelFile",
    "HubRepoNotFoundError",
    "HubTokenError",
    "HubUnreachableError",
    "Message",
    "ModelAccess",
    "ModelFileError",
    "ModelLoadError",
    "Option",
    "ParleyError",
    "PluginContext",
    "PluginSettings",
    "Registered",
    "RepoDetails",
    "RepoSummary",
    "TokenEvent",
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
    "fit_to_context",
    "fit_verdict",
    "hookimpl",
    "hub_endpoint",
    "lora_header_problem",
    "move_aside",
    "public_schema",
    "read_gguf_header",
    "run_tool",
    "tool_from_function",
    "validate_arguments",
]
