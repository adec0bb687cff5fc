"""What NPCs know, on the real server and the embedded model: lore from a lore file and the API (the inspector shows
what fired), the game's state for one line, memories recalled into the prompt, the rolling summary written in the
background, and a save game (export, reset, import) that restores the summary with the memories."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
GRETA = "tavern_keeper"


class Api:
    def __init__(self, server: Any) -> None:
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.conversations = pb_grpc.ConversationServiceStub(self.channel)
        self.designer = pb_grpc.DesignerServiceStub(self.channel)
        self.knowledge = pb_grpc.KnowledgeServiceStub(self.channel)
        self.http = httpx.Client(base_url=server.http_url, timeout=120)

    def render(self, text: str, conversation: str = "c1", **fields: Any) -> dict[str, pb.PromptSection]:
        talk = pb.TalkRequest(persona_id=GRETA, conversation_id=conversation, text=text, **fields)
        inspected = self.designer.RenderPrompt(pb.RenderPromptRequest(talk=talk), timeout=60)
        assert "".join(s.text for s in inspected.sections) == inspected.text
        assert sum(s.tokens for s in inspected.sections) == inspected.prompt_tokens
        names = [s.name for s in inspected.sections]
        assert len(names) == len(set(names)), names
        return {s.name: s for s in inspected.sections}

    def talk(self, text: str, conversation: str = "c1", **fields: Any) -> pb.CompletionFinal:
        request = pb.TalkRequest(
            persona_id=GRETA,
            conversation_id=conversation,
            text=text,
            sampling=pb.SamplingOptions(max_tokens=4, seed=1),
            **fields,
        )
        finals: list[pb.CompletionFinal] = [
            r.final for r in self.conversations.Talk(request, timeout=120) if r.HasField("final")
        ]
        assert len(finals) == 1
        return finals[0]

    def close(self) -> None:
        self.channel.close()
        self.http.close()


def eventually(check: Callable[[], bool], within_s: float) -> None:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, f"not true within {within_s} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from tests.conftest import start_server

    root = tmp_path_factory.mktemp("knowledge")
    (root / "lore").mkdir()
    shutil.copy(REPO / "lore" / "millbrook.toml", root / "lore")
    server = start_server(root / "data", NPCSERVER_LORE_DIR=str(root / "lore"), NPCSERVER_MAX_MEMORIES="5")
    client = Api(server)
    yield client
    client.close()
    server.stop()


def test_a_line_about_wolves_brings_the_wolves_entry_and_the_world_is_always_first(api: Api) -> None:
    wolves = api.render("Have you heard the wolves at night?")
    assert next(iter(wolves)) == "world" and "Millbrook is a village" in wolves["world"].text
    assert "grey wolves" in wolves["lore"].text and "Mayor" not in wolves["lore"].text
    calm = api.render("A mug of ale, please.")
    assert "lore" not in calm and "Millbrook is a village" in calm["world"].text
    # The real Talk sends exactly the inspected prompt.
    conversation = f"wolves-{uuid.uuid4().hex[:6]}"
    expected = sum(s.tokens for s in api.render("Have you heard the wolves at night?", conversation).values())
    assert api.talk("Have you heard the wolves at night?", conversation).usage.prompt_tokens == expected
    # The next line is scanned with the last turns too (scan_depth 2): the wolves are still in the conversation.
    assert "grey wolves" in api.render("And what else?", conversation)["lore"].text


def test_lore_through_the_api_keeps_its_budget_and_bad_books_write_nothing(api: Api) -> None:
    entries = [
        {"keys": ["bread"], "content": f"Bread fact {i}: the baker bakes rye loaves at dawn on the river road."}
        for i in range(12)
    ]
    book = {"id": "bakery", "personas": [GRETA], "token_budget": 60, "entries": entries}
    created = api.http.post("/v1/lore", json=book)
    assert created.status_code == 201, created.text
    assert api.http.post("/v1/lore", json=book).status_code == 409
    lore = api.render("Do you sell bread?")["lore"]
    assert 0 < lore.tokens <= 60 and lore.text.count("Bread fact") < 12
    listed = api.knowledge.ListLoreBooks(pb.ListLoreBooksRequest(), timeout=30).books
    assert [(b.id, b.source != "") for b in listed] == [("bakery", False), ("millbrook", True)]

    bad = [
        ({**book, "id": "nokeys", "entries": [{"content": "no keys"}]}, "entries[0] has no keys"),
        ({**book, "id": "empty", "entries": [{"keys": ["x"], "content": ""}]}, "entries[0].content is empty"),
        ({**book, "id": "huge", "entries": [{"keys": ["x"], "content": "x" * 5000}]}, "the limit is 4000"),
        ({**book, "id": "wide", "token_budget": 3000}, "more than half the context window"),
    ]
    for body, message in bad:
        response = api.http.post("/v1/lore", json=body)
        assert response.status_code == 400 and message in response.json()["error"]["message"], response.text
        assert api.http.get(f"/v1/lore/{body['id']}").status_code == 404  # nothing half-written
    with pytest.raises(grpc.RpcError) as info:
        api.knowledge.PutLoreBook(
            pb.PutLoreBookRequest(book=pb.LoreBook(id="millbrook", personas=[GRETA]), allow_existing=True), timeout=30
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "millbrook.toml" in info.value.details()
    assert api.http.delete("/v1/lore/bakery").status_code == 200
    assert "lore" not in api.render("Do you sell bread?")


def test_game_state_is_in_the_prompt_for_that_line_only(api: Api) -> None:
    conversation = f"state-{uuid.uuid4().hex[:6]}"
    facts = ["it is night", "the player carries the silver key"]
    state = api.render("Hello.", conversation, game_state=facts)["game_state"]
    assert "it is night" in state.text and "silver key" in state.text
    final = api.talk("Hello.", conversation, game_state=facts)
    assert final.usage.prompt_tokens > 0
    stored = api.http.get(f"/v1/npcs/{GRETA}/conversations/{conversation}").json()["turns"]
    assert len(stored) == 1 and "night" not in str(stored)
    assert "game_state" not in api.render("Hello again.", conversation)
    bad = api.http.post(
        f"/v1/npcs/{GRETA}/conversations/{conversation}:talk", json={"text": "Hi", "game_state": [""] * 2}
    )
    assert bad.status_code == 400 and "game_state[0] is empty" in bad.json()["error"]["message"]


def test_memories_are_recalled_when_they_matter_and_limited(api: Api) -> None:
    conversation = f"mem-{uuid.uuid4().hex[:6]}"
    path = f"/v1/npcs/{GRETA}/conversations/{conversation}/memories"
    ring = api.knowledge.AddMemory(
        pb.AddMemoryRequest(
            persona_id=GRETA, conversation_id=conversation, memory=pb.Memory(text="The player returned the ring.")
        ),
        timeout=30,
    ).memory
    assert ring.id > 0 and ring.importance == 5 and ring.source == "game"
    for text in ["The player owes two coppers.", "The player fears spiders.", "The cat is called Pip."]:
        assert api.http.post(path, json={"text": text, "importance": 3}).status_code == 201
    assert "returned the ring" in api.render("Do you remember the ring?", conversation)["memories"].text
    assert api.http.post(path, json={"text": "fifth"}).status_code == 201
    full = api.http.post(path, json={"text": "sixth"})
    assert full.status_code == 413 and "max_memories = 5" in full.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as info:
        api.knowledge.AddMemory(
            pb.AddMemoryRequest(persona_id=GRETA, conversation_id=conversation, memory=pb.Memory(text="sixth")),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    page = api.http.get(path, params={"page_size": 2}).json()
    assert page["memories"][0]["text"] == "The player returned the ring." and page["next_page_token"]
    assert len(api.http.get(path).json()["memories"]) == 5
    bad = api.http.post(path, json={"text": "x", "importance": 11})
    assert bad.status_code == 400 and "importance is 11" in bad.json()["error"]["message"]
    assert api.http.delete(f"{path}/{ring.id}").status_code == 200
    assert api.http.delete(f"{path}/{ring.id}").status_code == 404


def test_a_persona_that_proposes_memories_gets_the_models_memories(api: Api) -> None:
    greta = api.http.get(f"/v1/npcs/{GRETA}").json()
    body = {k: v for k, v in greta.items() if k not in ("source", "load_error")}
    body.update(id="remembering_keeper", propose_memories=True)
    assert api.http.put("/v1/npcs/remembering_keeper", json=body).status_code == 200
    path = "/v1/npcs/remembering_keeper/conversations/m1"
    line = {"text": "I found your lost silver ring by the well.", "sampling": {"max_tokens": 12, "seed": "3"}}
    reply = api.http.post(path + ":talk", json={**line, "stream": False})
    assert reply.status_code == 200 and reply.json()["stored"] is True, reply.text
    eventually(lambda: bool(api.http.get(path + "/memories").json()["memories"]), within_s=120)
    memory = api.http.get(path + "/memories").json()["memories"][0]
    assert memory["source"] == "model" and 1 <= memory["importance"] <= 10 and len(memory["text"]) >= 8
    # Greta herself does not propose any.
    assert api.http.get(f"/v1/npcs/{GRETA}/conversations/c1/memories").json()["memories"] == []


def test_after_200_turns_the_summary_is_in_the_prompt_and_a_save_game_restores_it_with_the_memories(api: Api) -> None:
    conversation = f"long-{uuid.uuid4().hex[:6]}"
    turns = [
        pb.Turn(player_line=f"Day {i}: I sold {i} wolf pelts at the market.", npc_line=f"Good trade, day {i}.")
        for i in range(200)
    ]
    api.conversations.ImportConversation(
        pb.ImportConversationRequest(
            conversation=pb.Conversation(persona_id=GRETA, conversation_id=conversation, turns=turns)
        ),
        timeout=60,
    )
    api.knowledge.AddMemory(
        pb.AddMemoryRequest(
            persona_id=GRETA, conversation_id=conversation, memory=pb.Memory(text="Wren owes Greta a favour.")
        ),
        timeout=30,
    )
    # The 201st line leaves the oldest turns out of the prompt; the summary is written after the reply, ahead of
    # the history's next move (the prompt shows it from that move on: see the next test).
    api.talk("What did I sell?", conversation)
    summary_path = f"/v1/npcs/{GRETA}/conversations/{conversation}/summary"
    eventually(lambda: bool(api.http.get(summary_path).json().get("text")), within_s=120)
    summary = api.http.get(summary_path).json()
    assert summary["through_turn"] > 0

    exported = api.conversations.ExportConversation(
        pb.ExportConversationRequest(persona_id=GRETA, conversation_id=conversation), timeout=60
    ).conversation
    # (The summary may have moved on meanwhile: the next move's is written ahead, in the background.)
    assert exported.summary.text and [m.text for m in exported.memories] == ["Wren owes Greta a favour."]
    summary = {"text": exported.summary.text, "through_turn": exported.summary.through_turn}
    api.conversations.ResetConversation(
        pb.ResetConversationRequest(persona_id=GRETA, conversation_id=conversation), timeout=30
    )
    assert api.http.get(summary_path).json().get("text", "") == ""
    assert api.http.get(f"/v1/npcs/{GRETA}/conversations/{conversation}/memories").json().get("memories", []) == []
    api.conversations.ImportConversation(pb.ImportConversationRequest(conversation=exported), timeout=60)
    restored = api.http.get(summary_path).json()
    assert (restored["text"], restored["through_turn"]) == (summary["text"], summary["through_turn"])
    memories = api.http.get(f"/v1/npcs/{GRETA}/conversations/{conversation}/memories").json()["memories"]
    assert [m["text"] for m in memories] == ["Wren owes Greta a favour."]
    # A save game brings its summary: the first line after loading it shows it.
    sections = api.render("And then?", conversation)
    assert list(sections)[:3] == ["world", "persona", "examples"] and "summary" in sections
    assert sections["summary"].text.startswith("[Earlier in this conversation:")

    # The game can replace the summary (a small model summarizes poorly).
    replaced = api.http.put(summary_path, json={"text": "Greta and the player are old friends."}).json()
    assert replaced["through_turn"] == 201
    assert "old friends" in api.render("Hello.", conversation)["summary"].text


def test_a_summary_written_ahead_shows_at_the_next_move_so_the_lines_before_it_extend_the_cached_prompt(
    api: Api,
) -> None:
    """After a line whose history overflows, the summary the next move needs is written in the background; the
    lines before that move keep the prompt they had (each extends the previous line's cached prompt instead of
    reading it again when the summary lands), and the move brings the summary in."""
    conversation = f"ahead-{uuid.uuid4().hex[:6]}"
    turns = [pb.Turn(player_line=f"Day {i}: any news of the mill?", npc_line=f"Quiet, day {i}.") for i in range(150)]
    api.conversations.ImportConversation(
        pb.ImportConversationRequest(
            conversation=pb.Conversation(persona_id=GRETA, conversation_id=conversation, turns=turns)
        ),
        timeout=60,
    )
    summary_path = f"/v1/npcs/{GRETA}/conversations/{conversation}/summary"
    same = pb.SamplingOptions(max_tokens=4, seed=1)  # the room, and so where the history starts, depends on it
    first = api.talk("What did I ask you every day?", conversation)
    left_out = first.truncated_turns
    assert 0 < left_out < 150
    # Written ahead, in the background: it covers turns that are still in the prompt...
    eventually(lambda: api.http.get(summary_path).json().get("through_turn", 0) > left_out, within_s=120)
    # ...so the prompt does not show it yet, and the next line reads only what is new.
    assert "summary" not in api.render("And then?", conversation, sampling=same)
    second = api.talk("And the day after?", conversation)
    assert second.truncated_turns == left_out
    assert second.timings.cached_prompt_tokens >= first.usage.prompt_tokens - 1, (
        second.timings.cached_prompt_tokens,
        first.usage.prompt_tokens,
    )
    # A long line fills the room: the history moves on, and the summary written for that move comes in with it.
    api.talk(" ".join(f"On day {i} the mill wheel turned and the miller sang." for i in range(140)), conversation)
    moved = api.render("And then?", conversation, sampling=same)
    assert "summary" in moved and moved["summary"].text.startswith("[Earlier in this conversation:")
    # A summary the game sets shows from the next line on.
    api.http.put(summary_path, json={"text": "The player asks about the mill every day."})
    assert "mill every day" in api.render("Hello.", conversation, sampling=same)["summary"].text
