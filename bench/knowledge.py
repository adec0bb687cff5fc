"""What NPCs know (issue 15, Cost): lore selection and memory retrieval on a line's TTFT.

    .venv/bin/python -m bench.knowledge            # starts its own server on loopback, prints the table
    .venv/bin/python -m bench.knowledge --results  # and appends it to bench/RESULTS.md

Two personas with the same text: one knows a lore book of 1,000 entries (a few match each line) and talks in a
conversation holding 10,000 memories; the other knows no lore and its conversation has no memories. Both
conversations start from the same imported history, and the same lines alternate between them, so the difference
of the TTFT medians is what lore selection and memory retrieval add (goal: at most 10 ms at p50). The same work is
also timed in process, without the model (selection over the book, the memory search on SQLite FTS5 and the
ranking), which is the cost itself without the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pbg

REPO = Path(__file__).resolve().parent.parent
KNOWING = "tavern_keeper"
PLAIN = "bench_plain_keeper"
ENTRIES = 1000
MEMORIES = 10_000
LINES = 24
NOUNS = ["ring", "sword", "horse", "cellar", "wolf", "mill", "bridge", "lantern", "apple", "boat", "cloak", "key"]
VERBS = ["found", "lost", "sold", "bought", "returned", "broke", "hid", "mended", "stole", "gave away"]
PLACES = ["market", "river", "forest", "chapel", "harbour", "tower", "farm", "inn", "quarry", "orchard"]


def lore_book() -> str:
    rng = random.Random(15)
    out = ['id = "bench_world"', f'personas = ["{KNOWING}"]', "token_budget = 200", "scan_depth = 2", ""]
    for i in range(ENTRIES):
        place, noun = PLACES[i % len(PLACES)], NOUNS[rng.randrange(len(NOUNS))]
        out += [
            "[[entries]]",
            f'keys = ["{place}{i}", "rune{i}"]',
            f"priority = {rng.randrange(1, 100)}",
            f'content = "Entry {i}: at the {place} there is an old {noun} that the villagers talk about."',
            "",
        ]
    out += ["[[entries]]", "constant = true", 'content = "Millbrook lies between the river and the forest."']
    return "\n".join(out)


def memories() -> list[pb.Memory]:
    rng = random.Random(6)
    return [
        pb.Memory(
            text=f"Day {i}: the player {rng.choice(VERBS)} the {rng.choice(NOUNS)} near the {rng.choice(PLACES)}.",
            importance=rng.randrange(1, 11),
        )
        for i in range(MEMORIES)
    ]


def history() -> list[pb.Turn]:
    return [pb.Turn(player_line=f"Question {i} about the weather.", npc_line=f"Answer {i}: fair.") for i in range(20)]


def line(i: int) -> str:
    place = PLACES[i % len(PLACES)]
    return f"Tell me about {place}{i * 37 % ENTRIES} and the {NOUNS[i % len(NOUNS)]} by the {place}, friend {i}."


def ttft_ms(
    stub: Any, persona: str, conversation: str, text: str, state: list[str] | None = None
) -> tuple[float, float, int]:
    """Client-side time to the first delta, the server's own TTFT, and the prompt's tokens."""
    started = time.perf_counter()
    first = None
    final = None
    request = pb.TalkRequest(
        persona_id=persona,
        conversation_id=conversation,
        text=text,
        sampling=pb.SamplingOptions(max_tokens=8, seed=1, temperature=0.0),
        game_state=state or [],
    )
    for event in stub.Talk(request, timeout=300):
        if first is None and event.HasField("delta"):
            first = time.perf_counter()
        if event.HasField("final"):
            final = event.final
    assert final is not None
    client = ((first or time.perf_counter()) - started) * 1000
    return client, final.timings.time_to_first_token_ms, final.usage.prompt_tokens


def chosen_text(designer: Any, text: str) -> list[str]:
    """The lore and memories the knowing conversation's prompt gets for ``text`` (from the inspector), as facts."""
    talk = pb.TalkRequest(persona_id=KNOWING, conversation_id="knows", text=text)
    sections = designer.RenderPrompt(pb.RenderPromptRequest(talk=talk), timeout=120).sections
    return [
        row.strip().strip("[]")
        for s in sections
        if s.name in ("lore", "memories")
        for row in s.text.splitlines()
        if row.strip()
    ][:32]


def in_process(tmp: Path) -> tuple[float, float, float]:
    """Medians (ms) of lore selection over the book, the memory search, and search plus ranking, without a model."""
    from npcserver.core import lore
    from npcserver.core.memory import query_words, rank
    from npcserver.store.base import Memory
    from npcserver.store.sqlite import SqliteStore

    (tmp / "lore").mkdir(exist_ok=True)
    (tmp / "lore" / "bench_world.toml").write_text(lore_book())
    book = lore.load_book_file(tmp / "lore" / "bench_world.toml")
    store = SqliteStore(tmp / "inproc.db")
    store.replace_turns("p", "c", [], memories=[Memory(m.text, m.importance) for m in memories()])
    recent = [f"Question {i} about the weather.\nAnswer {i}: fair." for i in range(2)]
    counts: dict[str, int] = {}

    def count(text: str) -> int:  # cached like the server's counter; words stand in for tokens here
        return counts.setdefault(text, len(text.split()))

    select, search, both = [], [], []
    for i in range(200):
        text = line(i)
        t0 = time.perf_counter()
        lore.select([book], recent, text, count)
        t1 = time.perf_counter()
        hits = store.search_memories("p", "c", query_words(text))
        t2 = time.perf_counter()
        rank(hits)
        t3 = time.perf_counter()
        select.append((t1 - t0) * 1000)
        search.append((t2 - t1) * 1000)
        both.append((t3 - t1) * 1000)
    store.close()
    return statistics.median(select), statistics.median(search), statistics.median(both)


def run(target: str, tmp: Path) -> str:
    with grpc.insecure_channel(target) as channel:
        personas = pbg.PersonaServiceStub(channel)
        conversations = pbg.ConversationServiceStub(channel)
        designer = pbg.DesignerServiceStub(channel)
        greta = personas.GetPersona(pb.GetPersonaRequest(persona_id=KNOWING), timeout=60).persona
        plain = pb.Persona()
        plain.CopyFrom(greta)
        plain.id, plain.source, plain.load_error = PLAIN, "", ""
        personas.UpdatePersona(pb.UpdatePersonaRequest(persona=plain, allow_missing=True), timeout=60)
        conversations.ImportConversation(
            pb.ImportConversationRequest(
                conversation=pb.Conversation(
                    persona_id=KNOWING, conversation_id="knows", turns=history(), memories=memories()
                )
            ),
            timeout=300,
        )
        conversations.ImportConversation(
            pb.ImportConversationRequest(
                conversation=pb.Conversation(persona_id=PLAIN, conversation_id="plain", turns=history())
            ),
            timeout=300,
        )
        knows: list[tuple[float, float, int]] = []
        same: list[tuple[float, float, int]] = []
        bare: list[tuple[float, float, int]] = []
        conversations.ImportConversation(
            pb.ImportConversationRequest(
                conversation=pb.Conversation(persona_id=PLAIN, conversation_id="same", turns=history())
            ),
            timeout=300,
        )
        for persona, conversation in ((KNOWING, "knows"), (PLAIN, "plain"), (PLAIN, "same")):
            ttft_ms(conversations, persona, conversation, "Good evening.")  # warm each conversation's KV
        for i in range(LINES):
            # The plain persona once with the same text as facts of the game's state (the same prompt size, without
            # the selection and retrieval), once with nothing.
            facts = chosen_text(designer, line(i))
            order = [(KNOWING, "knows", knows, None), (PLAIN, "same", same, facts), (PLAIN, "plain", bare, None)]
            for persona, conversation, out, state in order if i % 2 else order[::-1]:
                out.append(ttft_ms(conversations, persona, conversation, line(i), state))
    select, search, both = in_process(tmp)

    def med(rows: list[tuple[float, float, int]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    k_client, k_server, k_tokens = med(knows, 0), med(knows, 1), med(knows, 2)
    s_client, s_server, s_tokens = med(same, 0), med(same, 1), med(same, 2)
    b_client, b_server, b_tokens = med(bare, 0), med(bare, 1), med(bare, 2)
    return "\n".join(
        [
            f"### Lore selection and memory retrieval ({ENTRIES} entries, {MEMORIES} memories, {LINES} lines each)",
            "",
            "| Conversation | TTFT p50, client ms | TTFT p50, server ms | Prompt tokens p50 |",
            "| --- | --- | --- | --- |",
            f"| 1,000 lore entries + 10,000 memories | {k_client:.0f} | {k_server:.0f} | {k_tokens:.0f} |",
            f"| no lore or memories; the same text as game state | {s_client:.0f} | {s_server:.0f} | {s_tokens:.0f} |",
            f"| no lore or memories, nothing added | {b_client:.0f} | {b_server:.0f} | {b_tokens:.0f} |",
            f"| selection + retrieval: first minus second (goal <= 10 ms) | {k_client - s_client:+.0f} | "
            f"{k_server - s_server:+.0f} | |",
            "",
            "| In process, no model (200 lines) | Median ms |",
            "| --- | --- |",
            f"| lore selection over 1,000 entries | {select:.2f} |",
            f"| memory search, SQLite FTS5 over 10,000 memories | {search:.2f} |",
            f"| memory search + ranking | {both:.2f} |",
            "",
            "The chosen lore and memories are new prompt text on every line (after the history, so the cached prefix",
            "stays), and the model reads them like any text: the third row shows what those tokens cost on this CPU.",
            "The second row carries the same text without selecting it, so first minus second is the selection and",
            "retrieval; the in-process rows time them alone, without the noise of a shared machine.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.conftest import start_server

    with tempfile.TemporaryDirectory() as data:
        tmp = Path(data)
        (tmp / "lore").mkdir()
        (tmp / "lore" / "bench_world.toml").write_text(lore_book())
        server = start_server(
            tmp / "data",
            NPCSERVER_LOG_LEVEL="WARNING",
            NPCSERVER_LORE_DIR=str(tmp / "lore"),
            NPCSERVER_MAX_MEMORIES=str(MEMORIES),
        )
        try:
            started = time.monotonic()
            table = run(server.grpc_target, tmp)
            took = time.monotonic() - started
        finally:
            server.stop()
    print(table)
    if args.results:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(f"\n## What NPCs know ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {took:.0f} s)\n\n")
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
