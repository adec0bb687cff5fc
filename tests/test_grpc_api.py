"""The gRPC API end to end: the real server process, the embedded model, grpcio stubs over a real socket."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import jsonschema
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc

HANG_GUARD_S = 120  # a deadline only so a broken server fails the test instead of hanging it


class Api:
    def __init__(self, target: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.channel = grpc.insecure_channel(target)
        self.chat = pb_grpc.ChatServiceStub(self.channel)
        self.conv = pb_grpc.ConversationServiceStub(self.channel)
        self.personas = pb_grpc.PersonaServiceStub(self.channel)
        self.presets = pb_grpc.PresetServiceStub(self.channel)
        self.models = pb_grpc.ModelServiceStub(self.channel)
        self.metadata = metadata

    def talk(self, persona: str, conversation: str, text: str, **kw: Any) -> tuple[list[str], pb.CompletionFinal]:
        deltas, final = [], None
        for msg in self.conv.Talk(
            pb.TalkRequest(persona_id=persona, conversation_id=conversation, text=text, **kw),
            timeout=HANG_GUARD_S,
            metadata=self.metadata,
        ):
            if msg.HasField("delta"):
                deltas.append(msg.delta.content)
            else:
                final = msg.final
        assert final is not None, "stream ended without a final message"
        return deltas, final


@pytest.fixture(scope="module")
def api(live_server: Any) -> Iterator[Api]:
    a = Api(live_server.grpc_target)
    yield a
    a.channel.close()


def conv_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def user(text: str) -> pb.ChatMessage:
    return pb.ChatMessage(role="user", content=text)


def test_health_serving_and_reflection_lists_every_service(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    [reply] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "npcserver.api.v1.ChatService",
        "npcserver.api.v1.ConversationService",
        "npcserver.api.v1.PersonaService",
        "npcserver.api.v1.PresetService",
        "npcserver.api.v1.ModelService",
        "grpc.health.v1.Health",
    } <= names


def test_models_and_presets(api: Api) -> None:
    [model] = api.models.ListModels(pb.ListModelsRequest()).models
    assert model.id and model.object == "model" and model.context_size == 4096 and model.backend
    assert not model.has_chat_template  # the embedded base model has none: transcript rendering
    presets = api.presets.ListPresets(pb.ListPresetsRequest())
    assert [p.name for p in presets.presets] == ["dialogue", "factual", "storytelling"]
    assert presets.default_preset == "dialogue"


def test_stream_concatenation_equals_unary_reply_at_temperature_zero(api: Api) -> None:
    fields: dict[str, Any] = {
        "messages": [pb.ChatMessage(role="system", content="A quiet inn."), user("Describe the inn in one line.")],
        "temperature": 0.0,
        "seed": 7,
        "max_tokens": 32,
    }
    # A warm-up call first: the engine reuses the KV cache of a prompt it has seen, and a prompt evaluated in one
    # batch and one evaluated on top of cached KV can differ in the last bits of their logits. With the same cache
    # state on both calls, greedy decoding is exactly repeatable, which is what this test is about.
    api.chat.CreateChatCompletion(pb.CreateChatCompletionRequest(**fields), timeout=HANG_GUARD_S)
    unary = api.chat.CreateChatCompletion(pb.CreateChatCompletionRequest(**fields), timeout=HANG_GUARD_S)
    deltas: list[pb.StreamChatCompletionResponse] = []
    finals: list[pb.StreamChatCompletionResponse] = []
    for msg in api.chat.StreamChatCompletion(pb.StreamChatCompletionRequest(**fields), timeout=HANG_GUARD_S):
        (deltas if msg.HasField("delta") else finals).append(msg)
    ids = {(m.id, m.model, m.created) for m in deltas + finals}
    assert len(ids) == 1 and next(iter(ids))[0].startswith("chatcmpl-"), "every chunk carries the same id"
    assert len(deltas) >= 2, "tokens must stream as several messages"
    [final] = finals
    text = "".join(d.delta.content for d in deltas)
    assert text == final.final.message.content == unary.choices[0].message.content
    assert text.strip()
    assert unary.object == "chat.completion" and unary.id and unary.created > 0
    assert unary.choices[0].finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    u = unary.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0
    t = final.final.timings
    assert t.eval_count == final.final.usage.completion_tokens and t.time_to_first_token_ms > 0 and t.load_ms > 0


def test_talk_streams_stores_the_turn_and_carries_the_persona(api: Api) -> None:
    conv = conv_id()
    deltas, final = api.talk("tavern_keeper", conv, "What's on the menu tonight?", max_tokens=40)
    assert len(deltas) >= 2
    assert "".join(deltas).strip() == final.message.content
    # The persona (system prompt + three example exchanges) is well over 150 tokens of prompt.
    assert final.usage.prompt_tokens > 150
    history = api.conv.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id=conv))
    [turn] = history.conversation.turns
    assert turn.player_line == "What's on the menu tonight?" and turn.npc_line == final.message.content
    _, second = api.talk("tavern_keeper", conv, "And a room?", max_tokens=40)
    assert second.usage.prompt_tokens > final.usage.prompt_tokens  # the first turn is in the second prompt


def test_structured_persona_answers_valid_json(api: Api) -> None:
    persona = api.personas.GetPersona(pb.GetPersonaRequest(persona_id="ship_ai")).persona
    schema = json.loads(persona.response_schema)
    _, final = api.talk("ship_ai", conv_id(), "Report the hull status.")
    assert final.structured.valid, final.structured.error
    value = json.loads(final.message.content)
    jsonschema.validate(value, schema)


# Constraints the grammar enforces while sampling (types, enums, required keys, string lengths, array sizes).
# Numeric minimum/maximum are only checked after sampling: llama-cpp-python's schema converter does not encode them.
SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "npc": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}},
                "required": ["name", "age"],
            },
            "hostile": {"type": "boolean"},
        },
        "required": ["npc", "hostile"],
    },
    "enum": {
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad", "angry"]}, "line": {"type": "string", "maxLength": 40}},
        "required": ["mood", "line"],
    },
    "array": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 3}
        },
        "required": ["items"],
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_parses_and_validates(api: Api, name: str) -> None:
    schema = SCHEMAS[name]
    reply = api.chat.CreateChatCompletion(
        pb.CreateChatCompletionRequest(
            messages=[user("Describe a village NPC as JSON.")],
            temperature=0.2,
            seed=1,
            max_tokens=120,
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name=name, schema=json.dumps(schema), strict=True),
            ),
        ),
        timeout=HANG_GUARD_S,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == pb.FINISH_REASON_STOP
    assert choice.structured.valid, choice.structured.error
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_output(api: Api) -> None:
    reply = api.chat.CreateChatCompletion(
        pb.CreateChatCompletionRequest(
            messages=[user("Give a JSON object for a sword.")],
            temperature=0.0,
            max_tokens=80,
            response_format=pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT),
        ),
        timeout=HANG_GUARD_S,
    )
    choice = reply.choices[0]
    if choice.finish_reason == pb.FINISH_REASON_STOP:
        assert choice.structured.valid and isinstance(json.loads(choice.message.content), dict)
    else:
        assert not choice.structured.valid


def test_output_cut_by_max_tokens_is_length_and_not_valid(api: Api) -> None:
    reply = api.chat.CreateChatCompletion(
        pb.CreateChatCompletionRequest(
            messages=[user("Describe a village NPC as JSON.")],
            max_tokens=3,
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name="nested", schema=json.dumps(SCHEMAS["nested"])),
            ),
        ),
        timeout=HANG_GUARD_S,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == pb.FINISH_REASON_LENGTH
    assert not choice.structured.valid and choice.structured.error


#: Letters likely in any English reply; the stop test cuts at the first one the unstopped reply has.
STOP_LETTERS = "etaoinsrhl"


def test_talk_accepts_every_sampling_option_and_applies_them(api: Api) -> None:
    greedy: dict[str, Any] = {
        "temperature": 0.0,
        "seed": 3,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "top_p": 0.9,
    }
    line = "What is on the menu tonight?"
    _, one = api.talk("tavern_keeper", conv_id(), line, sampling=pb.SamplingOptions(**greedy, max_tokens=1))
    assert one.finish_reason == pb.FINISH_REASON_LENGTH and one.usage.completion_tokens == 1

    _, full = api.talk("tavern_keeper", conv_id(), line, sampling=pb.SamplingOptions(**greedy, max_tokens=24))
    text = full.message.content
    stop = next(c for c in STOP_LETTERS if text.find(c) > 0)
    sampling = pb.SamplingOptions(**greedy, max_tokens=24, stop=[stop])
    _, cut = api.talk("tavern_keeper", conv_id(), line, sampling=sampling)
    assert stop not in cut.message.content and cut.message.content, (text, cut.message.content)
    assert cut.finish_reason == pb.FINISH_REASON_STOP and cut.usage.completion_tokens < 24

    bad_options: list[tuple[dict[str, Any], str]] = [
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
    ]
    for bad, field in bad_options:
        with pytest.raises(grpc.RpcError) as info:
            api.talk("tavern_keeper", conv_id(), line, sampling=pb.SamplingOptions(**bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()


def _chat(api: Api, **fields: Any) -> Callable[[], Any]:
    return lambda: api.chat.CreateChatCompletion(pb.CreateChatCompletionRequest(**fields), timeout=HANG_GUARD_S)


BAD_REQUESTS: dict[str, tuple[Callable[[Api], Callable[[], Any]], grpc.StatusCode, str]] = {
    # INVALID_ARGUMENT, as REST's 400: the request names a model this server does not serve.
    "unknown model": (
        lambda a: _chat(a, model="gpt-9", messages=[user("hi")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "gpt-9",
    ),
    "empty messages": (lambda a: _chat(a, messages=[]), grpc.StatusCode.INVALID_ARGUMENT, "messages must not be"),
    "unknown role": (
        lambda a: _chat(a, messages=[pb.ChatMessage(role="wizard", content="hi")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "role 'wizard' is unknown",
    ),
    "temperature": (
        lambda a: _chat(a, messages=[user("hi")], temperature=3.0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature must be between 0 and 2",
    ),
    "negative max_tokens": (
        lambda a: _chat(a, messages=[user("hi")], max_tokens=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_tokens",
    ),
    "message too long": (
        lambda a: _chat(a, messages=[user("x" * 9000)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit is 8000",
    ),
    "unknown preset": (
        lambda a: _chat(a, messages=[user("hi")], preset="spooky"),
        grpc.StatusCode.NOT_FOUND,
        "preset 'spooky'",
    ),
    "uncompilable schema": (
        lambda a: _chat(
            a,
            messages=[user("hi")],
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(schema='{"type": "nonsense"}')
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "nonsense",
    ),
    "schema not json": (
        lambda a: _chat(
            a,
            messages=[user("hi")],
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(schema="{not json")
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not valid JSON",
    ),
    "unknown persona": (
        lambda a: lambda: a.talk("nobody", "c1", "hi"),
        grpc.StatusCode.NOT_FOUND,
        "persona 'nobody' does not exist",
    ),
    "invalid persona id": (
        lambda a: lambda: a.talk("Bad Id!", "c1", "hi"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "persona_id 'Bad Id!' is invalid",
    ),
    "empty player line": (
        lambda a: lambda: a.talk("tavern_keeper", "c1", "   "),
        grpc.StatusCode.INVALID_ARGUMENT,
        "text must not be empty",
    ),
    "invalid conversation id": (
        lambda a: lambda: a.talk("tavern_keeper", "has space", "hi"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "conversation_id",
    ),
    "create persona without prompt": (
        lambda a: (
            lambda: a.personas.CreatePersona(
                pb.CreatePersonaRequest(persona=pb.Persona(id="mute", display_name="Mute"))
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "system_prompt must not be empty",
    ),
    "persona exists": (
        lambda a: lambda: _create_twice(a, "echo_twice"),
        grpc.StatusCode.ALREADY_EXISTS,
        "already exists",
    ),
    "persona managed by a file": (
        lambda a: (
            lambda: a.personas.CreatePersona(
                pb.CreatePersonaRequest(
                    persona=pb.Persona(id="tavern_keeper", display_name="Greta", system_prompt="again")
                )
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "tavern_keeper.toml",
    ),
}


def _create_twice(a: Api, persona_id: str) -> None:
    """Creates an API persona (once per server: the first call may find it there already), then creates it again."""
    persona = pb.Persona(id=persona_id, display_name="Echo", system_prompt="An echo in a cave.")
    try:
        a.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    a.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona))


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_precise_status(api: Api, case: str) -> None:
    make, code, fragment = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        make(api)()
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()


def test_cancelled_stream_frees_the_engine_and_stores_nothing(api: Api) -> None:
    conv = conv_id()
    call = api.conv.Talk(
        pb.TalkRequest(persona_id="narrator", conversation_id=conv, text="The hero walks for days.", max_tokens=0),
        timeout=HANG_GUARD_S,
    )
    received = 0
    for msg in call:
        assert msg.HasField("delta")
        received += 1
        if received == 3:
            call.cancel()
            break
    assert received == 3
    # max_tokens=0 runs to the end of the 4k context (about a minute on 2 cores) unless cancel stops it. A
    # 30-second deadline on the next request therefore fails if the cancelled generation kept the engine.
    reply = api.chat.CreateChatCompletion(
        pb.CreateChatCompletionRequest(messages=[user("Say hi.")], max_tokens=4), timeout=30
    )
    assert reply.usage.completion_tokens > 0
    history = api.conv.GetConversation(pb.GetConversationRequest(persona_id="narrator", conversation_id=conv))
    assert len(history.conversation.turns) == 0


def test_export_then_import_reproduces_a_conversation(api: Api) -> None:
    conv = conv_id()
    api.talk("tavern_keeper", conv, "Evening.", max_tokens=20)
    api.talk("tavern_keeper", conv, "Any work?", max_tokens=20)
    saved = api.conv.ExportConversation(
        pb.ExportConversationRequest(persona_id="tavern_keeper", conversation_id=conv)
    ).conversation
    blob = saved.SerializeToString()  # what a game writes into its save file
    assert (
        api.conv.ResetConversation(
            pb.ResetConversationRequest(persona_id="tavern_keeper", conversation_id=conv)
        ).deleted_turns
        == 2
    )
    restored = pb.Conversation.FromString(blob)
    assert api.conv.ImportConversation(pb.ImportConversationRequest(conversation=restored)).imported_turns == 2
    again = api.conv.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id=conv))
    assert again.conversation == saved


def test_persona_crud(api: Api) -> None:
    pid = "smith_" + uuid.uuid4().hex[:6]
    persona = pb.Persona(
        id=pid,
        display_name="Brom",
        system_prompt="Brom is a blacksmith.",
        default_preset="factual",
        example_dialogue=[pb.ExampleExchange(player_line="Fix my sword?", npc_line="Two silver.")],
        max_tokens=30,
    )
    created = api.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona)).persona
    assert created == persona
    assert api.personas.GetPersona(pb.GetPersonaRequest(persona_id=pid)).persona == persona
    page = api.personas.ListPersonas(pb.ListPersonasRequest(page_size=1))
    assert len(page.personas) == 1 and page.next_page_token
    all_ids, token = [], ""
    while True:
        page = api.personas.ListPersonas(pb.ListPersonasRequest(page_size=2, page_token=token))
        all_ids += [p.id for p in page.personas]
        token = page.next_page_token
        if not token:
            break
    assert pid in all_ids and all_ids == sorted(all_ids)
    persona.system_prompt = "Brom is a grumpy blacksmith."
    assert api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=persona)).persona.system_prompt.startswith(
        "Brom is a grumpy"
    )
    _, final = api.talk(pid, "c1", "Can you fix this?", max_tokens=10)
    assert final.usage.completion_tokens > 0
    assert api.personas.DeletePersona(pb.DeletePersonaRequest(persona_id=pid)).deleted_conversations == 1
    with pytest.raises(grpc.RpcError) as info:
        api.personas.GetPersona(pb.GetPersonaRequest(persona_id=pid))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    ghost = pb.Persona(id=pid, display_name="Ghost", system_prompt="Gone.")
    with pytest.raises(grpc.RpcError) as info:
        api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=ghost))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=ghost, allow_missing=True)).persona == ghost
    api.personas.DeletePersona(pb.DeletePersonaRequest(persona_id=pid))


def test_memory_survives_a_restart(server_factory: Any, tmp_path: Any) -> None:
    data = tmp_path / "keep"
    first = server_factory(data_dir=data)
    a = Api(first.grpc_target)
    _, final = a.talk("tavern_keeper", "save-1", "Remember me: I am Aldric.", max_tokens=20)
    a.channel.close()
    assert first.stop() == 0  # graceful shutdown on SIGTERM
    second = server_factory(data_dir=data)
    b = Api(second.grpc_target)
    history = b.conv.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="save-1"))
    [turn] = history.conversation.turns
    assert turn.player_line == "Remember me: I am Aldric." and turn.npc_line == final.message.content
    b.talk("tavern_keeper", "save-1", "Who am I?", max_tokens=20)
    assert (
        len(
            b.conv.GetConversation(
                pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="save-1")
            ).conversation.turns
        )
        == 2
    )
    b.channel.close()


def test_long_conversation_drops_oldest_turns_instead_of_failing(server_factory: Any) -> None:
    server = server_factory(NPCSERVER_CTX_SIZE="512")
    a = Api(server.grpc_target)
    turns = [pb.Turn(player_line=f"Story part {i}: " + "and then " * 15, npc_line="Go on. " * 10) for i in range(30)]
    a.conv.ImportConversation(
        pb.ImportConversationRequest(
            conversation=pb.Conversation(persona_id="tavern_keeper", conversation_id="long", turns=turns)
        )
    )
    _, final = a.talk("tavern_keeper", "long", "So what now?", max_tokens=16)
    assert final.truncated_turns > 0
    assert final.usage.prompt_tokens + 16 <= 512
    stored = a.conv.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="long"))
    # Truncation is for the prompt only; memory keeps everything (and the new turn, unless Greta's reply was empty).
    kept = list(stored.conversation.turns)
    assert [(t.player_line, t.npc_line) for t in kept[:30]] == [(t.player_line, t.npc_line) for t in turns]
    assert len(kept) == (31 if final.message.content.strip() or final.action_calls else 30)
    a.channel.close()


def test_queue_limit_gives_resource_exhausted(server_factory: Any) -> None:
    # One sequence running and one waiting: the other four concurrent streams must be turned away.
    server = server_factory(NPCSERVER_MAX_QUEUE="1", NPCSERVER_PARALLEL="1")
    a = Api(server.grpc_target)

    def long_stream(i: int) -> str:
        try:
            for _ in a.conv.Talk(
                pb.TalkRequest(persona_id="narrator", conversation_id=f"q{i}", text="Go.", max_tokens=48),
                timeout=HANG_GUARD_S,
            ):
                pass
            return "ok"
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            return "exhausted"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(long_stream, range(6)))
    assert "exhausted" in outcomes and "ok" in outcomes
    a.channel.close()


def test_api_key_is_required_when_configured(server_factory: Any) -> None:
    server = server_factory(NPCSERVER_API_KEY="s3cret", NPCSERVER_HTTP_ENABLED="false")
    anon = Api(server.grpc_target)
    with pytest.raises(grpc.RpcError) as info:
        anon.presets.ListPresets(pb.ListPresetsRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in info.value.details()
    ok = anon.presets.ListPresets(pb.ListPresetsRequest(), metadata=(("authorization", "Bearer s3cret"),))
    assert ok.presets
    anon.channel.close()


def test_concurrent_talks_on_one_conversation_are_serialized(api: Api) -> None:
    conv = conv_id()
    lines = ["First question?", "Second question?"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        finals = list(pool.map(lambda t: api.talk("tavern_keeper", conv, t, max_tokens=16)[1], lines))
    history = api.conv.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id=conv))
    turns = history.conversation.turns
    assert sorted(t.player_line for t in turns) == sorted(lines)
    # One ran after the other: the later turn was generated with the earlier one in its prompt.
    earlier, later = sorted(finals, key=lambda f: f.usage.prompt_tokens)
    assert later.usage.prompt_tokens > earlier.usage.prompt_tokens
    assert [t.npc_line for t in turns] == [earlier.message.content, later.message.content]
