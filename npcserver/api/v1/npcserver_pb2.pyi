from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ACTION: _ClassVar[FinishReason]

class SelectiveLogic(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SELECTIVE_LOGIC_UNSPECIFIED: _ClassVar[SelectiveLogic]
    SELECTIVE_LOGIC_AND_ANY: _ClassVar[SelectiveLogic]
    SELECTIVE_LOGIC_NOT_ALL: _ClassVar[SelectiveLogic]
    SELECTIVE_LOGIC_NOT_ANY: _ClassVar[SelectiveLogic]
    SELECTIVE_LOGIC_AND_ALL: _ClassVar[SelectiveLogic]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ACTION: FinishReason
SELECTIVE_LOGIC_UNSPECIFIED: SelectiveLogic
SELECTIVE_LOGIC_AND_ANY: SelectiveLogic
SELECTIVE_LOGIC_NOT_ALL: SelectiveLogic
SELECTIVE_LOGIC_NOT_ANY: SelectiveLogic
SELECTIVE_LOGIC_AND_ALL: SelectiveLogic

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REASONING_CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    name: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ActionCall]
    tool_call_id: str
    reasoning_content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., name: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ActionCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., reasoning_content: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("name", "description", "parameters_schema", "await_result")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    AWAIT_RESULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_schema: str
    await_result: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_schema: _Optional[str] = ..., await_result: _Optional[bool] = ...) -> None: ...

class ActionChoice(_message.Message):
    __slots__ = ("mode", "name")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[ActionChoice.Mode]
        MODE_AUTO: _ClassVar[ActionChoice.Mode]
        MODE_NONE: _ClassVar[ActionChoice.Mode]
        MODE_REQUIRED: _ClassVar[ActionChoice.Mode]
        MODE_NAMED: _ClassVar[ActionChoice.Mode]
    MODE_UNSPECIFIED: ActionChoice.Mode
    MODE_AUTO: ActionChoice.Mode
    MODE_NONE: ActionChoice.Mode
    MODE_REQUIRED: ActionChoice.Mode
    MODE_NAMED: ActionChoice.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    mode: ActionChoice.Mode
    name: str
    def __init__(self, mode: _Optional[_Union[ActionChoice.Mode, str]] = ..., name: _Optional[str] = ...) -> None: ...

class ActionCall(_message.Message):
    __slots__ = ("id", "name", "arguments", "index")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments: str
    index: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ActionResult(_message.Message):
    __slots__ = ("call_id", "content")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    content: str
    def __init__(self, call_id: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("type", "json_schema")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[ResponseFormat.Type]
        TYPE_TEXT: _ClassVar[ResponseFormat.Type]
        TYPE_JSON_OBJECT: _ClassVar[ResponseFormat.Type]
        TYPE_JSON_SCHEMA: _ClassVar[ResponseFormat.Type]
    TYPE_UNSPECIFIED: ResponseFormat.Type
    TYPE_TEXT: ResponseFormat.Type
    TYPE_JSON_OBJECT: ResponseFormat.Type
    TYPE_JSON_SCHEMA: ResponseFormat.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    type: ResponseFormat.Type
    json_schema: JsonSchema
    def __init__(self, type: _Optional[_Union[ResponseFormat.Type, str]] = ..., json_schema: _Optional[_Union[JsonSchema, _Mapping]] = ...) -> None: ...

class JsonSchema(_message.Message):
    __slots__ = ("name", "schema", "strict")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    name: str
    schema: str
    strict: bool
    def __init__(self, name: _Optional[str] = ..., schema: _Optional[str] = ..., strict: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("prompt_eval_count", "prompt_eval_ms", "eval_count", "eval_ms", "time_to_first_token_ms", "load_ms", "queue_ms", "cached_prompt_tokens", "total_ms", "model_load_ms")
    PROMPT_EVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EVAL_MS_FIELD_NUMBER: _ClassVar[int]
    EVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVAL_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    prompt_eval_count: int
    prompt_eval_ms: float
    eval_count: int
    eval_ms: float
    time_to_first_token_ms: float
    load_ms: float
    queue_ms: float
    cached_prompt_tokens: int
    total_ms: float
    model_load_ms: float
    def __init__(self, prompt_eval_count: _Optional[int] = ..., prompt_eval_ms: _Optional[float] = ..., eval_count: _Optional[int] = ..., eval_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., load_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., cached_prompt_tokens: _Optional[int] = ..., total_ms: _Optional[float] = ..., model_load_ms: _Optional[float] = ...) -> None: ...

class StructuredOutput(_message.Message):
    __slots__ = ("valid", "error", "schema_name")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NAME_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    error: str
    schema_name: str
    def __init__(self, valid: _Optional[bool] = ..., error: _Optional[str] = ..., schema_name: _Optional[str] = ...) -> None: ...

class SamplingOptions(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "stop")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., repeat_penalty: _Optional[float] = ..., seed: _Optional[int] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class ContentDelta(_message.Message):
    __slots__ = ("content", "reasoning_content")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REASONING_CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: str
    reasoning_content: str
    def __init__(self, content: _Optional[str] = ..., reasoning_content: _Optional[str] = ...) -> None: ...

class CompletionFinal(_message.Message):
    __slots__ = ("message", "finish_reason", "usage", "timings", "structured", "truncated_turns", "action_calls", "replayed")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_TURNS_FIELD_NUMBER: _ClassVar[int]
    ACTION_CALLS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    message: ChatMessage
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    structured: StructuredOutput
    truncated_turns: int
    action_calls: _containers.RepeatedCompositeFieldContainer[ActionCall]
    replayed: bool
    def __init__(self, message: _Optional[_Union[ChatMessage, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., structured: _Optional[_Union[StructuredOutput, _Mapping]] = ..., truncated_turns: _Optional[int] = ..., action_calls: _Optional[_Iterable[_Union[ActionCall, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class CreateChatCompletionRequest(_message.Message):
    __slots__ = ("model", "messages", "temperature", "top_p", "max_tokens", "stop", "seed", "preset", "response_format", "continue_final_message", "chat_template", "top_k", "min_p", "repeat_penalty", "sampling", "tools", "tool_choice", "parallel_tool_calls", "enable_thinking", "add_generation_prompt", "chat_template_content_format", "documents")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_THINKING_FIELD_NUMBER: _ClassVar[int]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_CONTENT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    top_p: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    preset: str
    response_format: ResponseFormat
    continue_final_message: bool
    chat_template: str
    top_k: int
    min_p: float
    repeat_penalty: float
    sampling: SamplingOptions
    tools: _containers.RepeatedCompositeFieldContainer[Action]
    tool_choice: ActionChoice
    parallel_tool_calls: bool
    enable_thinking: bool
    add_generation_prompt: bool
    chat_template_content_format: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., preset: _Optional[str] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., continue_final_message: _Optional[bool] = ..., chat_template: _Optional[str] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., repeat_penalty: _Optional[float] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., tool_choice: _Optional[_Union[ActionChoice, _Mapping]] = ..., parallel_tool_calls: _Optional[bool] = ..., enable_thinking: _Optional[bool] = ..., add_generation_prompt: _Optional[bool] = ..., chat_template_content_format: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class CreateChatCompletionResponse(_message.Message):
    __slots__ = ("id", "object", "created", "model", "choices", "usage", "timings")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    model: str
    choices: _containers.RepeatedCompositeFieldContainer[Choice]
    usage: Usage
    timings: Timings
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., model: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[Choice, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class Choice(_message.Message):
    __slots__ = ("index", "message", "finish_reason", "structured")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    index: int
    message: ChatMessage
    finish_reason: FinishReason
    structured: StructuredOutput
    def __init__(self, index: _Optional[int] = ..., message: _Optional[_Union[ChatMessage, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., structured: _Optional[_Union[StructuredOutput, _Mapping]] = ...) -> None: ...

class StreamChatCompletionRequest(_message.Message):
    __slots__ = ("model", "messages", "temperature", "top_p", "max_tokens", "stop", "seed", "preset", "response_format", "continue_final_message", "chat_template", "top_k", "min_p", "repeat_penalty", "sampling", "tools", "tool_choice", "parallel_tool_calls", "enable_thinking", "add_generation_prompt", "chat_template_content_format", "documents")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_THINKING_FIELD_NUMBER: _ClassVar[int]
    ADD_GENERATION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_CONTENT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    top_p: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    preset: str
    response_format: ResponseFormat
    continue_final_message: bool
    chat_template: str
    top_k: int
    min_p: float
    repeat_penalty: float
    sampling: SamplingOptions
    tools: _containers.RepeatedCompositeFieldContainer[Action]
    tool_choice: ActionChoice
    parallel_tool_calls: bool
    enable_thinking: bool
    add_generation_prompt: bool
    chat_template_content_format: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., preset: _Optional[str] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., continue_final_message: _Optional[bool] = ..., chat_template: _Optional[str] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., repeat_penalty: _Optional[float] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., tool_choice: _Optional[_Union[ActionChoice, _Mapping]] = ..., parallel_tool_calls: _Optional[bool] = ..., enable_thinking: _Optional[bool] = ..., add_generation_prompt: _Optional[bool] = ..., chat_template_content_format: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("text", "title")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    text: str
    title: str
    def __init__(self, text: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class BatchChatCompletionsRequest(_message.Message):
    __slots__ = ("conversations",)
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[CreateChatCompletionRequest]
    def __init__(self, conversations: _Optional[_Iterable[_Union[CreateChatCompletionRequest, _Mapping]]] = ...) -> None: ...

class BatchChatCompletionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CreateChatCompletionResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CreateChatCompletionResponse, _Mapping]]] = ...) -> None: ...

class StreamChatCompletionResponse(_message.Message):
    __slots__ = ("id", "model", "created", "delta", "final", "action_call")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_CALL_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    created: int
    delta: ContentDelta
    final: CompletionFinal
    action_call: ActionCall
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., created: _Optional[int] = ..., delta: _Optional[_Union[ContentDelta, _Mapping]] = ..., final: _Optional[_Union[CompletionFinal, _Mapping]] = ..., action_call: _Optional[_Union[ActionCall, _Mapping]] = ...) -> None: ...

class ExampleExchange(_message.Message):
    __slots__ = ("player_line", "npc_line")
    PLAYER_LINE_FIELD_NUMBER: _ClassVar[int]
    NPC_LINE_FIELD_NUMBER: _ClassVar[int]
    player_line: str
    npc_line: str
    def __init__(self, player_line: _Optional[str] = ..., npc_line: _Optional[str] = ...) -> None: ...

class Persona(_message.Message):
    __slots__ = ("id", "display_name", "system_prompt", "example_dialogue", "default_preset", "response_schema", "max_tokens", "stop", "player_name", "description", "source", "load_error", "opening_lines", "post_history_instructions", "actions", "enable_thinking", "propose_memories")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_DIALOGUE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRESET_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    PLAYER_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    OPENING_LINES_FIELD_NUMBER: _ClassVar[int]
    POST_HISTORY_INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_THINKING_FIELD_NUMBER: _ClassVar[int]
    PROPOSE_MEMORIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    system_prompt: str
    example_dialogue: _containers.RepeatedCompositeFieldContainer[ExampleExchange]
    default_preset: str
    response_schema: str
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    player_name: str
    description: str
    source: str
    load_error: str
    opening_lines: _containers.RepeatedScalarFieldContainer[str]
    post_history_instructions: str
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    enable_thinking: bool
    propose_memories: bool
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., system_prompt: _Optional[str] = ..., example_dialogue: _Optional[_Iterable[_Union[ExampleExchange, _Mapping]]] = ..., default_preset: _Optional[str] = ..., response_schema: _Optional[str] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., player_name: _Optional[str] = ..., description: _Optional[str] = ..., source: _Optional[str] = ..., load_error: _Optional[str] = ..., opening_lines: _Optional[_Iterable[str]] = ..., post_history_instructions: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., enable_thinking: _Optional[bool] = ..., propose_memories: _Optional[bool] = ...) -> None: ...

class CreatePersonaRequest(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class CreatePersonaResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class GetPersonaRequest(_message.Message):
    __slots__ = ("persona_id",)
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    def __init__(self, persona_id: _Optional[str] = ...) -> None: ...

class GetPersonaResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class ListPersonasRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPersonasResponse(_message.Message):
    __slots__ = ("personas", "next_page_token")
    PERSONAS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    personas: _containers.RepeatedCompositeFieldContainer[Persona]
    next_page_token: str
    def __init__(self, personas: _Optional[_Iterable[_Union[Persona, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePersonaRequest(_message.Message):
    __slots__ = ("persona", "allow_missing")
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    allow_missing: bool
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdatePersonaResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class DeletePersonaRequest(_message.Message):
    __slots__ = ("persona_id",)
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    def __init__(self, persona_id: _Optional[str] = ...) -> None: ...

class DeletePersonaResponse(_message.Message):
    __slots__ = ("deleted_conversations",)
    DELETED_CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_conversations: int
    def __init__(self, deleted_conversations: _Optional[int] = ...) -> None: ...

class ImportCharacterCardRequest(_message.Message):
    __slots__ = ("card", "persona_id", "replace")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    card: bytes
    persona_id: str
    replace: bool
    def __init__(self, card: _Optional[bytes] = ..., persona_id: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class ImportCharacterCardResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: Persona
    def __init__(self, persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class ExportCharacterCardRequest(_message.Message):
    __slots__ = ("persona_id", "format")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    format: str
    def __init__(self, persona_id: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ExportCharacterCardResponse(_message.Message):
    __slots__ = ("card", "media_type")
    CARD_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    card: bytes
    media_type: str
    def __init__(self, card: _Optional[bytes] = ..., media_type: _Optional[str] = ...) -> None: ...

class TalkRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "text", "preset", "temperature", "top_p", "max_tokens", "seed", "response_format", "player_name", "sampling", "actions", "action_choice", "action_results", "enable_thinking", "request_id", "game_state")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PLAYER_NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ACTION_CHOICE_FIELD_NUMBER: _ClassVar[int]
    ACTION_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_THINKING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GAME_STATE_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    text: str
    preset: str
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    response_format: ResponseFormat
    player_name: str
    sampling: SamplingOptions
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    action_choice: ActionChoice
    action_results: _containers.RepeatedCompositeFieldContainer[ActionResult]
    enable_thinking: bool
    request_id: str
    game_state: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., text: _Optional[str] = ..., preset: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., player_name: _Optional[str] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., action_choice: _Optional[_Union[ActionChoice, _Mapping]] = ..., action_results: _Optional[_Iterable[_Union[ActionResult, _Mapping]]] = ..., enable_thinking: _Optional[bool] = ..., request_id: _Optional[str] = ..., game_state: _Optional[_Iterable[str]] = ...) -> None: ...

class TalkResponse(_message.Message):
    __slots__ = ("delta", "final", "action_call", "id", "model", "created")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_CALL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    delta: ContentDelta
    final: CompletionFinal
    action_call: ActionCall
    id: str
    model: str
    created: int
    def __init__(self, delta: _Optional[_Union[ContentDelta, _Mapping]] = ..., final: _Optional[_Union[CompletionFinal, _Mapping]] = ..., action_call: _Optional[_Union[ActionCall, _Mapping]] = ..., id: _Optional[str] = ..., model: _Optional[str] = ..., created: _Optional[int] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("player_line", "npc_line", "create_time_ms", "player_name", "action_calls", "action_results")
    PLAYER_LINE_FIELD_NUMBER: _ClassVar[int]
    NPC_LINE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PLAYER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_CALLS_FIELD_NUMBER: _ClassVar[int]
    ACTION_RESULTS_FIELD_NUMBER: _ClassVar[int]
    player_line: str
    npc_line: str
    create_time_ms: int
    player_name: str
    action_calls: _containers.RepeatedCompositeFieldContainer[ActionCall]
    action_results: _containers.RepeatedCompositeFieldContainer[ActionResult]
    def __init__(self, player_line: _Optional[str] = ..., npc_line: _Optional[str] = ..., create_time_ms: _Optional[int] = ..., player_name: _Optional[str] = ..., action_calls: _Optional[_Iterable[_Union[ActionCall, _Mapping]]] = ..., action_results: _Optional[_Iterable[_Union[ActionResult, _Mapping]]] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "turns", "summary", "memories")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    summary: ConversationSummary
    memories: _containers.RepeatedCompositeFieldContainer[Memory]
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ..., summary: _Optional[_Union[ConversationSummary, _Mapping]] = ..., memories: _Optional[_Iterable[_Union[Memory, _Mapping]]] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ResetConversationRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class ResetConversationResponse(_message.Message):
    __slots__ = ("deleted_turns",)
    DELETED_TURNS_FIELD_NUMBER: _ClassVar[int]
    deleted_turns: int
    def __init__(self, deleted_turns: _Optional[int] = ...) -> None: ...

class ExportConversationRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class ExportConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ImportConversationRequest(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ImportConversationResponse(_message.Message):
    __slots__ = ("imported_turns",)
    IMPORTED_TURNS_FIELD_NUMBER: _ClassVar[int]
    imported_turns: int
    def __init__(self, imported_turns: _Optional[int] = ...) -> None: ...

class Preset(_message.Message):
    __slots__ = ("name", "description", "temperature", "top_p", "top_k", "min_p", "repeat_penalty")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., repeat_penalty: _Optional[float] = ...) -> None: ...

class ListPresetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPresetsResponse(_message.Message):
    __slots__ = ("presets", "default_preset")
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRESET_FIELD_NUMBER: _ClassVar[int]
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    default_preset: str
    def __init__(self, presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ..., default_preset: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "object", "created", "owned_by", "context_size", "backend", "gpu_layers", "has_chat_template", "loaded")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    owned_by: str
    context_size: int
    backend: str
    gpu_layers: int
    has_chat_template: bool
    loaded: bool
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., context_size: _Optional[int] = ..., backend: _Optional[str] = ..., gpu_layers: _Optional[int] = ..., has_chat_template: _Optional[bool] = ..., loaded: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class RenderPromptRequest(_message.Message):
    __slots__ = ("talk", "chat", "persona")
    TALK_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    talk: TalkRequest
    chat: CreateChatCompletionRequest
    persona: Persona
    def __init__(self, talk: _Optional[_Union[TalkRequest, _Mapping]] = ..., chat: _Optional[_Union[CreateChatCompletionRequest, _Mapping]] = ..., persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class PromptSection(_message.Message):
    __slots__ = ("name", "text", "tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    text: str
    tokens: int
    def __init__(self, name: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class ResolvedParameter(_message.Message):
    __slots__ = ("name", "value", "source", "preset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    source: str
    preset: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., source: _Optional[str] = ..., preset: _Optional[str] = ...) -> None: ...

class RenderPromptResponse(_message.Message):
    __slots__ = ("text", "sections", "prompt_tokens", "left_out", "grammar", "grammar_source", "sampling", "stop")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    GRAMMAR_FIELD_NUMBER: _ClassVar[int]
    GRAMMAR_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    text: str
    sections: _containers.RepeatedCompositeFieldContainer[PromptSection]
    prompt_tokens: int
    left_out: _containers.RepeatedScalarFieldContainer[int]
    grammar: str
    grammar_source: str
    sampling: _containers.RepeatedCompositeFieldContainer[ResolvedParameter]
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., sections: _Optional[_Iterable[_Union[PromptSection, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., left_out: _Optional[_Iterable[int]] = ..., grammar: _Optional[str] = ..., grammar_source: _Optional[str] = ..., sampling: _Optional[_Iterable[_Union[ResolvedParameter, _Mapping]]] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class CompareVariant(_message.Message):
    __slots__ = ("label", "preset", "sampling", "persona")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    label: str
    preset: str
    sampling: SamplingOptions
    persona: Persona
    def __init__(self, label: _Optional[str] = ..., preset: _Optional[str] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "text", "player_name", "variants")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PLAYER_NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    text: str
    player_name: str
    variants: _containers.RepeatedCompositeFieldContainer[CompareVariant]
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., text: _Optional[str] = ..., player_name: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[CompareVariant, _Mapping]]] = ...) -> None: ...

class CompareResult(_message.Message):
    __slots__ = ("label", "final", "persona")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    label: str
    final: CompletionFinal
    persona: Persona
    def __init__(self, label: _Optional[str] = ..., final: _Optional[_Union[CompletionFinal, _Mapping]] = ..., persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("results", "peak_batch", "engine_steps")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PEAK_BATCH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_STEPS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CompareResult]
    peak_batch: int
    engine_steps: int
    def __init__(self, results: _Optional[_Iterable[_Union[CompareResult, _Mapping]]] = ..., peak_batch: _Optional[int] = ..., engine_steps: _Optional[int] = ...) -> None: ...

class LoreEntry(_message.Message):
    __slots__ = ("name", "content", "keys", "secondary_keys", "selective", "selective_logic", "constant", "enabled", "insertion_order", "priority", "case_sensitive")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_KEYS_FIELD_NUMBER: _ClassVar[int]
    SELECTIVE_FIELD_NUMBER: _ClassVar[int]
    SELECTIVE_LOGIC_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    INSERTION_ORDER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CASE_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    secondary_keys: _containers.RepeatedScalarFieldContainer[str]
    selective: bool
    selective_logic: SelectiveLogic
    constant: bool
    enabled: bool
    insertion_order: int
    priority: int
    case_sensitive: bool
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., secondary_keys: _Optional[_Iterable[str]] = ..., selective: _Optional[bool] = ..., selective_logic: _Optional[_Union[SelectiveLogic, str]] = ..., constant: _Optional[bool] = ..., enabled: _Optional[bool] = ..., insertion_order: _Optional[int] = ..., priority: _Optional[int] = ..., case_sensitive: _Optional[bool] = ...) -> None: ...

class LoreBook(_message.Message):
    __slots__ = ("id", "name", "personas", "entries", "token_budget", "scan_depth", "case_sensitive", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERSONAS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SCAN_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CASE_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    personas: _containers.RepeatedScalarFieldContainer[str]
    entries: _containers.RepeatedCompositeFieldContainer[LoreEntry]
    token_budget: int
    scan_depth: int
    case_sensitive: bool
    source: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., personas: _Optional[_Iterable[str]] = ..., entries: _Optional[_Iterable[_Union[LoreEntry, _Mapping]]] = ..., token_budget: _Optional[int] = ..., scan_depth: _Optional[int] = ..., case_sensitive: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("id", "text", "importance", "create_time_ms", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    importance: int
    create_time_ms: int
    source: str
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., importance: _Optional[int] = ..., create_time_ms: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class ConversationSummary(_message.Message):
    __slots__ = ("text", "through_turn", "update_time_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    THROUGH_TURN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    through_turn: int
    update_time_ms: int
    def __init__(self, text: _Optional[str] = ..., through_turn: _Optional[int] = ..., update_time_ms: _Optional[int] = ...) -> None: ...

class ListLoreBooksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoreBooksResponse(_message.Message):
    __slots__ = ("books",)
    BOOKS_FIELD_NUMBER: _ClassVar[int]
    books: _containers.RepeatedCompositeFieldContainer[LoreBook]
    def __init__(self, books: _Optional[_Iterable[_Union[LoreBook, _Mapping]]] = ...) -> None: ...

class GetLoreBookRequest(_message.Message):
    __slots__ = ("book_id",)
    BOOK_ID_FIELD_NUMBER: _ClassVar[int]
    book_id: str
    def __init__(self, book_id: _Optional[str] = ...) -> None: ...

class GetLoreBookResponse(_message.Message):
    __slots__ = ("book",)
    BOOK_FIELD_NUMBER: _ClassVar[int]
    book: LoreBook
    def __init__(self, book: _Optional[_Union[LoreBook, _Mapping]] = ...) -> None: ...

class PutLoreBookRequest(_message.Message):
    __slots__ = ("book", "allow_existing")
    BOOK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EXISTING_FIELD_NUMBER: _ClassVar[int]
    book: LoreBook
    allow_existing: bool
    def __init__(self, book: _Optional[_Union[LoreBook, _Mapping]] = ..., allow_existing: _Optional[bool] = ...) -> None: ...

class PutLoreBookResponse(_message.Message):
    __slots__ = ("book",)
    BOOK_FIELD_NUMBER: _ClassVar[int]
    book: LoreBook
    def __init__(self, book: _Optional[_Union[LoreBook, _Mapping]] = ...) -> None: ...

class DeleteLoreBookRequest(_message.Message):
    __slots__ = ("book_id",)
    BOOK_ID_FIELD_NUMBER: _ClassVar[int]
    book_id: str
    def __init__(self, book_id: _Optional[str] = ...) -> None: ...

class DeleteLoreBookResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddMemoryRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "memory")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    memory: Memory
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., memory: _Optional[_Union[Memory, _Mapping]] = ...) -> None: ...

class AddMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: Memory
    def __init__(self, memory: _Optional[_Union[Memory, _Mapping]] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "page_size", "page_token")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    page_size: int
    page_token: str
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ("memories", "next_page_token")
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[Memory]
    next_page_token: str
    def __init__(self, memories: _Optional[_Iterable[_Union[Memory, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteMemoryRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "memory_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    memory_id: int
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., memory_id: _Optional[int] = ...) -> None: ...

class DeleteMemoryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSummaryRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class GetSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: ConversationSummary
    def __init__(self, summary: _Optional[_Union[ConversationSummary, _Mapping]] = ...) -> None: ...

class SetSummaryRequest(_message.Message):
    __slots__ = ("persona_id", "conversation_id", "summary")
    PERSONA_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    persona_id: str
    conversation_id: str
    summary: ConversationSummary
    def __init__(self, persona_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., summary: _Optional[_Union[ConversationSummary, _Mapping]] = ...) -> None: ...

class SetSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: ConversationSummary
    def __init__(self, summary: _Optional[_Union[ConversationSummary, _Mapping]] = ...) -> None: ...
