"""Wire fixtures shared by Python protobuf and the Unity package's generated C# codec.

Each fixture is a message built here with the official Python protobuf runtime. The C# interop tests
(tests/unity/interop/WireInteropTests.cs) build the same messages field by field, so the check runs both ways:

  python tests/unity/wire_fixtures.py --out DIR     writes DIR/<name>.bin (Python's bytes) for C# to decode,
                                                    re-encode, and compare byte for byte;
  python tests/unity/wire_fixtures.py --verify DIR  parses DIR/<name>.cs.bin (C#'s bytes) with Python and checks
                                                    they equal the fixture message and Python's own bytes.

The values poke at the encodings that differ between hand-written codecs: proto3 `optional` fields set to zero
(presence), negative int32 (10-byte varints), negative int64, -0.0 (written, as protobuf does), non-ASCII text,
nested messages, oneofs, and repeated messages and strings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf.message import Message

from npcserver.api.v1 import npcserver_pb2 as pb


def fixtures() -> dict[str, Message]:
    """The fixture messages by name. WireInteropTests.cs mirrors every value here."""
    schema = '{"type":"object","properties":{"line":{"type":"string"}}}'
    item_schema = '{"type":"object","properties":{"item":{"type":"string","enum":["room key","ale"]}}}'
    conversation = pb.Conversation(
        persona_id="tavern_keeper",
        conversation_id="save-1/slot 2",
        turns=[
            pb.Turn(
                player_line="What's on the menu?",
                npc_line="Stew. Again.",
                create_time_ms=1763740800123,
                player_name="Ann",
            ),
            pb.Turn(player_line="Und das Bier?", npc_line="Kühl genug. 🍺", create_time_ms=1763740801000),
        ],
    )
    return {
        "talk_request_full": pb.TalkRequest(
            persona_id="ship_ai",
            conversation_id="save-1/slot 2",
            text="Où est la cale? 🚀",
            preset="dialogue",
            temperature=0.0,
            top_p=0.875,
            max_tokens=64,
            seed=-5,
            response_format=pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name="ship_line", schema=schema, strict=True),
            ),
            player_name="Ann",
        ),
        "talk_request_minimal": pb.TalkRequest(persona_id="tavern_keeper", conversation_id="p", text="Hi"),
        "talk_response_delta": pb.TalkResponse(delta=pb.ContentDelta(content="Ale, ")),
        "talk_response_final": pb.TalkResponse(
            final=pb.CompletionFinal(
                message=pb.ChatMessage(role="assistant", content='{"line":"Aye","emotion":"calm","action":"none"}'),
                finish_reason=pb.FINISH_REASON_LENGTH,
                usage=pb.Usage(prompt_tokens=120, completion_tokens=16, total_tokens=136),
                timings=pb.Timings(
                    prompt_eval_count=10,
                    prompt_eval_ms=1.5,
                    eval_count=4,
                    eval_ms=-0.0,
                    time_to_first_token_ms=12.25,
                    queue_ms=3.0,
                    cached_prompt_tokens=7,
                ),
                structured=pb.StructuredOutput(valid=True, schema_name="ship_line"),
                truncated_turns=2,
            )
        ),
        "import_conversation_request": pb.ImportConversationRequest(conversation=conversation),
        "get_persona_response": pb.GetPersonaResponse(
            persona=pb.Persona(
                id="tavern_keeper",
                display_name="Greta",
                system_prompt="Greta runs the Rusty Tankard.\nShe is gruff.",
                example_dialogue=[pb.ExampleExchange(player_line="Room?", npc_line="Two silver.")],
                default_preset="dialogue",
                max_tokens=0,
                stop=["\nPlayer:", "###"],
                player_name="Traveller",
            )
        ),
        "list_models_response": pb.ListModelsResponse(
            models=[
                pb.Model(
                    id="gemma-3-270m",
                    object="model",
                    created=1763740800,
                    owned_by="npcserver",
                    context_size=8192,
                    backend="CPU",
                    gpu_layers=-1,
                    has_chat_template=False,
                ),
            ]
        ),
        "list_presets_response": pb.ListPresetsResponse(
            presets=[
                pb.Preset(
                    name="dialogue",
                    description="Lively",
                    temperature=0.8,
                    top_p=0.95,
                    top_k=40,
                    min_p=0.05,
                    repeat_penalty=1.1,
                ),
                pb.Preset(name="factual", temperature=-0.0),
            ],
            default_preset="dialogue",
        ),
        "stream_chat_completion_request": pb.StreamChatCompletionRequest(
            model="",
            messages=[
                pb.ChatMessage(role="system", content="Be brief."),
                pb.ChatMessage(role="user", content="Hi", name="Ann"),
            ],
            max_tokens=-1,
            stop=["\n"],
            top_k=0,
            response_format=pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT),
        ),
        "talk_request_actions": pb.TalkRequest(
            persona_id="tavern_keeper",
            conversation_id="p",
            actions=[
                pb.Action(name="open_gate", description="Opens the north gate.", await_result=True),
                pb.Action(name="give_item", parameters_schema=item_schema),
            ],
            action_choice=pb.ActionChoice(mode=pb.ActionChoice.MODE_NAMED, name="give_item"),
            action_results=[pb.ActionResult(call_id="call_7", content="Der Schlüssel 🔑 ist übergeben")],
        ),
        "talk_response_action_call": pb.TalkResponse(
            action_call=pb.ActionCall(id="call_7", name="give_item", arguments='{"item":"room key"}', index=1),
            id="talk-1",
        ),
        "talk_response_final_action": pb.TalkResponse(
            final=pb.CompletionFinal(
                message=pb.ChatMessage(role="assistant", content="Here."),
                finish_reason=pb.FINISH_REASON_ACTION,
                action_calls=[pb.ActionCall(id="call_7", name="give_item", arguments='{"item":"room key"}')],
            )
        ),
    }


def write(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, message in fixtures().items():
        (out / f"{name}.bin").write_bytes(message.SerializeToString())
    print(f"wrote {len(fixtures())} wire fixtures to {out}")
    return 0


def verify(directory: Path) -> int:
    """Checks C#'s encodings; prints one line per fixture and returns 1 on any mismatch or missing file."""
    failed = 0
    for name, expected in fixtures().items():
        path = directory / f"{name}.cs.bin"
        if not path.exists():
            print(f"FAIL {name}: C# wrote no {path.name}")
            failed += 1
            continue
        data = path.read_bytes()
        parsed = type(expected)()
        parsed.ParseFromString(data)
        if parsed != expected:
            print(f"FAIL {name}: C# bytes parse to a different message:\n{parsed}\nexpected:\n{expected}")
            failed += 1
        elif data != expected.SerializeToString():
            print(f"FAIL {name}: same message, but C# bytes differ from Python's: {data.hex()}")
            failed += 1
        else:
            print(f"ok   {name}: C# encoding parses in Python and matches its bytes")
    total = len(fixtures())
    print(f"wire interop (C# -> Python): {total - failed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write Python's encodings as <name>.bin")
    group.add_argument("--verify", type=Path, help="check C#'s encodings (<name>.cs.bin)")
    args = parser.parse_args()
    return write(args.out) if args.out else verify(args.verify)


if __name__ == "__main__":
    sys.exit(main())
