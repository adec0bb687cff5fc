"""The prompt inspector and side-by-side variants on the real server and the embedded model: the inspector's
sections tile the prompt and their tokens add up to the usage.prompt_tokens of the same Talk (and chat completion),
it names the turns left out and where each sampling parameter came from, and stores nothing; a comparison of three
presets runs as one engine batch and leaves the conversation as it was."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc

pytestmark = pytest.mark.model


class Api:
    def __init__(self, server: Any) -> None:
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.personas = pb_grpc.PersonaServiceStub(self.channel)
        self.conversations = pb_grpc.ConversationServiceStub(self.channel)
        self.designer = pb_grpc.DesignerServiceStub(self.channel)
        self.http = httpx.Client(base_url=server.http_url, timeout=120)

    def turns(self, persona_id: str, conversation_id: str) -> list[pb.Turn]:
        request = pb.GetConversationRequest(persona_id=persona_id, conversation_id=conversation_id)
        return list(self.conversations.GetConversation(request, timeout=30).conversation.turns)


@pytest.fixture(scope="module")
def api(live_server: Any) -> Iterator[Api]:
    client = Api(live_server)
    yield client
    client.channel.close()
    client.http.close()


@pytest.fixture(scope="module")
def hilda(api: Api) -> str:
    """An API persona with every Talk section: examples, post-history instructions, a default preset."""
    persona_id = f"hilda_{uuid.uuid4().hex[:8]}"
    persona = pb.Persona(
        id=persona_id,
        display_name="Hilda",
        system_prompt="Hilda runs the ferry across the Grey River. She is curt and counts coins twice.",
        example_dialogue=[pb.ExampleExchange(player_line="How much to cross?", npc_line="Two coppers. Each way.")],
        post_history_instructions="Hilda answers in one short sentence.",
        default_preset="factual",
        max_tokens=12,
    )
    api.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona), timeout=30)
    return persona_id


def _imported(api: Api, persona_id: str, n: int, words: int = 4) -> str:
    conversation_id = f"bench-{uuid.uuid4().hex[:8]}"
    turns = [
        pb.Turn(player_line=f"Question {i}: " + "what about the river " * words, npc_line=f"Answer {i}. Cold water.")
        for i in range(n)
    ]
    conversation = pb.Conversation(persona_id=persona_id, conversation_id=conversation_id, turns=turns)
    api.conversations.ImportConversation(pb.ImportConversationRequest(conversation=conversation), timeout=60)
    return conversation_id


def test_the_inspector_adds_up_to_the_talks_prompt_tokens_and_stores_nothing(api: Api, hilda: str) -> None:
    conversation_id = _imported(api, hilda, 3)
    talk = pb.TalkRequest(
        persona_id=hilda,
        conversation_id=conversation_id,
        text="Is the ferry running today?",
        sampling=pb.SamplingOptions(temperature=0.3, seed=5),
    )
    inspected = api.designer.RenderPrompt(pb.RenderPromptRequest(talk=talk), timeout=60)
    names = [s.name for s in inspected.sections]
    assert names == ["persona", "examples", "history", "player_line", "post_history_instructions", "reply_start"]
    assert "".join(s.text for s in inspected.sections) == inspected.text
    assert sum(s.tokens for s in inspected.sections) == inspected.prompt_tokens
    assert all(s.tokens > 0 for s in inspected.sections)
    by_name = {s.name: s for s in inspected.sections}
    assert "Grey River" in by_name["persona"].text and "Two coppers" in by_name["examples"].text
    assert by_name["history"].text.count("Question") == 3 and not inspected.left_out
    assert by_name["post_history_instructions"].text.strip() == "Hilda answers in one short sentence."
    assert "Is the ferry running today?" in by_name["player_line"].text
    assert by_name["reply_start"].text == "Hilda:"
    sources = {p.name: (p.source, p.preset, p.value) for p in inspected.sampling}
    assert sources["temperature"][:2] == ("request", "") and sources["temperature"][2] == pytest.approx(0.3)
    assert sources["top_p"][:2] == ("persona", "factual")
    assert sources["max_tokens"] == ("persona", "", 12)
    assert sources["seed"] == ("request", "", 5)
    assert inspected.grammar == "" and "\n" in inspected.stop
    assert len(api.turns(hilda, conversation_id)) == 3  # nothing stored

    # The same request, for real: its usage counts exactly the inspected prompt.
    finals = [r.final for r in api.conversations.Talk(talk, timeout=120) if r.HasField("final")]
    assert finals[0].usage.prompt_tokens == inspected.prompt_tokens

    # A preset named by the request is the source of what it sets; the server default covers a persona without one.
    talk.preset = "storytelling"
    again = api.designer.RenderPrompt(pb.RenderPromptRequest(talk=talk), timeout=60)
    assert {p.name: (p.source, p.preset) for p in again.sampling}["top_p"] == ("preset", "storytelling")


def test_the_inspector_names_the_turns_left_out_for_length(api: Api, hilda: str) -> None:
    conversation_id = _imported(api, hilda, 80, words=12)
    body = {"text": "Still there?", "sampling": {"seed": "3"}}
    path = f"/v1/npcs/{hilda}/conversations/{conversation_id}"
    inspected = api.http.post(path + ":render", json=body).json()
    left_out = inspected["left_out"]
    assert left_out and left_out == list(range(len(left_out)))
    assert (
        f"Question {len(left_out) - 1}:" not in inspected["text"] and f"Question {len(left_out)}:" in inspected["text"]
    )
    assert sum(s["tokens"] for s in inspected["sections"]) == inspected["prompt_tokens"]
    final = api.http.post(path + ":talk", json={**body, "stream": False}).json()
    assert final["truncated_turns"] == len(left_out)
    assert final["usage"]["prompt_tokens"] == inspected["prompt_tokens"]


def test_the_inspector_of_a_chat_completion_and_an_edited_persona(api: Api, hilda: str) -> None:
    messages = [
        {"role": "system", "content": "You are a ferry timetable."},
        {"role": "user", "content": "When is the first ferry?"},
        {"role": "assistant", "content": "At dawn."},
        {"role": "user", "content": "And the last?"},
    ]
    inspected = api.http.post("/v1/chat/completions:render", json={"messages": messages, "seed": 1}).json()
    assert [s["name"] for s in inspected["sections"]] == ["system", "history", "last_message", "reply_start"]
    assert sum(s["tokens"] for s in inspected["sections"]) == inspected["prompt_tokens"]
    done = api.http.post("/v1/chat/completions", json={"messages": messages, "seed": 1, "max_tokens": 4}).json()
    assert done["usage"]["prompt_tokens"] == inspected["prompt_tokens"]

    # Edited fields are tried, not stored, and checked as an update would check them.
    path = f"/v1/npcs/{hilda}/conversations/edit-{uuid.uuid4().hex[:6]}:render"
    tried = api.http.post(path, json={"text": "Hi", "persona": {"system_prompt": "Hilda sings sea shanties."}})
    assert tried.status_code == 200 and tried.json()["sections"][0]["text"].startswith("Hilda sings sea shanties.")
    assert "Grey River" in api.personas.GetPersona(pb.GetPersonaRequest(persona_id=hilda)).persona.system_prompt
    bad = api.http.post(path, json={"text": "Hi", "persona": {"default_preset": "nope"}})
    assert bad.status_code == 404 and "preset 'nope' does not exist" in bad.json()["error"]["message"]


def test_three_presets_compare_in_one_engine_batch_and_leave_the_conversation_unchanged(api: Api, hilda: str) -> None:
    conversation_id = _imported(api, hilda, 2)
    before = api.turns(hilda, conversation_id)
    request = pb.CompareRequest(
        persona_id=hilda,
        conversation_id=conversation_id,
        text="Can you take my cart across?",
        variants=[
            pb.CompareVariant(preset=name, sampling=pb.SamplingOptions(seed=11, max_tokens=10))
            for name in ("factual", "dialogue", "storytelling")
        ],
    )
    request.variants[2].persona.display_name = "Old Hilda"
    compared = api.designer.Compare(request, timeout=120)
    assert [r.label for r in compared.results] == ["variant 1", "variant 2", "variant 3"]
    # All three held sequences in the engine at once (an earlier test's long conversation may have its rolling summary
    # written in the background meanwhile, a fourth sequence).
    assert compared.peak_batch >= 3, compared
    for r in compared.results:
        assert r.final.usage.completion_tokens > 0 and r.final.usage.prompt_tokens > 0
        assert r.final.timings.time_to_first_token_ms > 0
    assert compared.results[2].persona.display_name == "Old Hilda"
    assert compared.results[0].persona.display_name == "Hilda"
    assert api.turns(hilda, conversation_id) == before  # unchanged

    # Saving a variant is UpdatePersona with the persona its result carries.
    saved = api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=compared.results[2].persona), timeout=30)
    assert saved.persona.display_name == "Old Hilda"
    api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=compared.results[0].persona), timeout=30)


def test_compare_refuses_bad_requests_precisely(api: Api, hilda: str) -> None:
    path = f"/v1/npcs/{hilda}/conversations/c1:compare"
    one = api.http.post(path, json={"text": "Hi", "variants": [{}]})
    assert one.status_code == 400 and "variants has 1 entries; compare takes 2 to 4" in one.json()["error"]["message"]
    hot = api.http.post(path, json={"text": "Hi", "variants": [{}, {"sampling": {"temperature": 5}}]})
    assert hot.status_code == 400 and "temperature must be between 0 and 2" in hot.json()["error"]["message"]
    preset = api.http.post(path, json={"text": "Hi", "variants": [{}, {"preset": "loud"}]})
    assert preset.status_code == 404 and "preset 'loud' does not exist" in preset.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as err:
        api.designer.RenderPrompt(pb.RenderPromptRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "set talk or chat" in (err.value.details() or "")


def test_the_inspector_of_a_persona_with_actions_matches_its_talk(api: Api) -> None:
    """Greta's file declares actions: the prompt describes them, and the actions' grammar is the one in force."""
    talk = pb.TalkRequest(
        persona_id="tavern_keeper",
        conversation_id=f"acts-{uuid.uuid4().hex[:8]}",
        text="A mug of ale, please.",
        sampling=pb.SamplingOptions(max_tokens=8, seed=2, temperature=0),
    )
    inspected = api.designer.RenderPrompt(pb.RenderPromptRequest(talk=talk), timeout=60)
    assert sum(s.tokens for s in inspected.sections) == inspected.prompt_tokens
    assert inspected.grammar and inspected.grammar_source == "actions"
    assert "give_item" in inspected.sections[0].text
    finals = [r.final for r in api.conversations.Talk(talk, timeout=120) if r.HasField("final")]
    assert finals[0].usage.prompt_tokens == inspected.prompt_tokens
