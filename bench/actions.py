"""NPC actions (issue 13, Measure): what actions cost and how reliable calls are on the embedded model.

    .venv/bin/python -m bench.actions            # starts its own server on loopback, prints the tables
    .venv/bin/python -m bench.actions --results  # and appends them to bench/RESULTS.md

- decode tok/s of a tavern keeper reply that may call an action (choice auto, give_item declared) against the same
  persona and lines without actions (goal: at least 0.9x);
- TTFT of the await-result follow-up (the Talk that carries the action result), with how much of its prompt came
  from the KV cache, against a fresh first line;
- on the embedded model with a fixed seed set: how often a call is well formed (its arguments parse and match the
  schema; must be 100%) and names a declared action (100%), under choice auto and required. A call the model made
  that failed validation is counted as malformed (the server reports it in the final's ``structured`` and never
  sends it as a call).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jsonschema

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pbg

REPO = Path(__file__).resolve().parent.parent
NPC = "tavern_keeper"
PLAIN = "bench_plain_keeper"
LINES = [
    "Here are three silver. I'll take the room.",
    "A mug of brown ale, please. Here's a copper.",
    "I'm starving. Some stew, if you please; here's my coin.",
    "Evening. Any rooms free tonight?",
    "What's the news from the north road?",
    "Can I get the key to my room? I paid this morning.",
    "Two ales for me and my friend.",
    "Heard any rumours lately?",
]
SEEDS = list(range(1, 25))
OPEN_GATE = pb.Action(
    name="open_gate",
    description="Greta opens the yard gate.",
    parameters_schema=json.dumps({"type": "object", "properties": {"gate": {"enum": ["yard", "stable"]}}}),
    await_result=True,
)
Mode = pb.ActionChoice.Mode


@dataclass
class Reliability:
    replies: int = 0
    calls: int = 0
    well_formed: int = 0
    declared: int = 0
    malformed: int = 0

    def row(self, label: str) -> str:
        made = self.calls + self.malformed
        wf = 100.0 * self.well_formed / made if made else float("nan")
        dn = 100.0 * self.declared / made if made else float("nan")
        return f"| {label} | {self.replies} | {made} | {wf:.0f}% | {dn:.0f}% |"


def talk(stub: Any, persona: str, conv: str, text: str = "", **kw: Any) -> tuple[list[pb.TalkResponse], Any]:
    events = list(stub.Talk(pb.TalkRequest(persona_id=persona, conversation_id=conv, text=text, **kw), timeout=300))
    return events, events[-1].final


def tps(final: pb.CompletionFinal) -> float | None:
    t = final.timings
    # Decode speed after the first token: the tokens after it over the time they took.
    if t.eval_count < 8 or t.eval_ms <= 0:
        return None
    return (t.eval_count - 1) / (t.eval_ms / 1000)


def run(target: str) -> str:
    channel = grpc.insecure_channel(target)
    conv_stub = pbg.ConversationServiceStub(channel)
    personas = pbg.PersonaServiceStub(channel)
    keeper = personas.GetPersona(pb.GetPersonaRequest(persona_id=NPC)).persona
    schemas = {a.name: json.loads(a.parameters_schema) for a in keeper.actions}
    plain = pb.Persona()
    plain.CopyFrom(keeper)
    plain.id = PLAIN
    plain.ClearField("source")
    del plain.actions[:]
    # The same examples without the one that shows a call.
    kept = [e for e in plain.example_dialogue if "<action>" not in e.npc_line]
    del plain.example_dialogue[:]
    plain.example_dialogue.extend(kept)
    personas.UpdatePersona(pb.UpdatePersonaRequest(persona=plain, allow_missing=True))

    def new() -> str:
        return "bench-" + uuid.uuid4().hex[:10]

    talk(conv_stub, NPC, new(), "Hello.", sampling=pb.SamplingOptions(max_tokens=8))  # warm-up
    # 1. Decode speed with and without actions, alternating so background load hits both alike.
    with_actions: list[float] = []
    without: list[float] = []
    for rep in range(2):
        for i, line in enumerate(LINES):
            sampling = pb.SamplingOptions(temperature=0.7, seed=100 * rep + i, max_tokens=60)
            for persona, into in ((NPC, with_actions), (PLAIN, without)):
                _, final = talk(conv_stub, persona, new(), line, sampling=sampling)
                speed = tps(final)
                if speed is not None:
                    into.append(speed)
    # 2. The await-result follow-up.
    first_ttft: list[float] = []
    follow_ttft: list[float] = []
    cached: list[float] = []
    for i in range(6):
        conv = new()
        events, first = talk(
            conv_stub,
            NPC,
            conv,
            f"Open the yard gate for my horse, please. ({i})",
            actions=[OPEN_GATE],
            action_choice=pb.ActionChoice(mode=Mode.MODE_NAMED, name="open_gate"),
            sampling=pb.SamplingOptions(temperature=0, max_tokens=40),
        )
        call = next(e.action_call for e in events if e.HasField("action_call"))
        _, follow = talk(
            conv_stub,
            NPC,
            conv,
            action_results=[pb.ActionResult(call_id=call.id, content="the yard gate is open")],
            sampling=pb.SamplingOptions(temperature=0, max_tokens=40),
        )
        first_ttft.append(first.timings.time_to_first_token_ms)
        follow_ttft.append(follow.timings.time_to_first_token_ms)
        cached.append(follow.timings.cached_prompt_tokens / max(follow.usage.prompt_tokens, 1))
    # 3. Reliability on a fixed seed set.
    rel: dict[str, Reliability] = {"auto": Reliability(), "required": Reliability()}
    for mode_name, mode in (("auto", Mode.MODE_AUTO), ("required", Mode.MODE_REQUIRED)):
        r = rel[mode_name]
        for seed in SEEDS:
            line = LINES[seed % len(LINES)]
            events, final = talk(
                conv_stub,
                NPC,
                new(),
                line,
                action_choice=pb.ActionChoice(mode=mode),
                sampling=pb.SamplingOptions(temperature=0.9, seed=seed, max_tokens=60),
            )
            r.replies += 1
            if final.HasField("structured") and not final.structured.valid:
                r.malformed += 1
            for e in events:
                if not e.HasField("action_call"):
                    continue
                r.calls += 1
                c = e.action_call
                if c.name in schemas:
                    r.declared += 1
                    try:
                        jsonschema.validate(json.loads(c.arguments), schemas[c.name])
                        r.well_formed += 1
                    except (ValueError, jsonschema.ValidationError):
                        pass
    personas.DeletePersona(pb.DeletePersonaRequest(persona_id=PLAIN))
    channel.close()
    ratio = statistics.median(with_actions) / statistics.median(without)
    return "\n".join(
        [
            "### Decode speed: a reply that may call an action vs the same reply without actions",
            "",
            "| Persona | Replies | Median tok/s |",
            "| --- | --- | --- |",
            f"| tavern keeper, give_item declared, choice auto | {len(with_actions)} | "
            f"{statistics.median(with_actions):.1f} |",
            f"| same persona, no actions | {len(without)} | {statistics.median(without):.1f} |",
            f"| ratio (goal >= 0.9) | | {ratio:.2f}x |",
            "",
            "### Await-result follow-up",
            "",
            "| Turn | Median TTFT ms | Prompt from KV cache |",
            "| --- | --- | --- |",
            f"| first line (ends with FINISH_REASON_ACTION) | {statistics.median(first_ttft):.0f} | |",
            f"| follow-up carrying the result | {statistics.median(follow_ttft):.0f} | "
            f"{100 * statistics.median(cached):.0f}% |",
            "",
            f"### Calls on the embedded model ({len(SEEDS)} seeds, temperature 0.9)",
            "",
            "| Choice | Replies | Calls made | Well formed | Names a declared action |",
            "| --- | --- | --- | --- | --- |",
            rel["auto"].row("auto"),
            rel["required"].row("required"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.actions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", action="store_true", help="append the tables to bench/RESULTS.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.conftest import start_server

    with tempfile.TemporaryDirectory() as data:
        server = start_server(Path(data), NPCSERVER_LOG_LEVEL="WARNING")
        try:
            started = time.monotonic()
            tables = run(server.grpc_target)
            took = time.monotonic() - started
        finally:
            server.stop()
    print(tables)
    if args.results:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(f"\n## NPC actions ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {took:.0f} s)\n\n")
            f.write(tables + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
