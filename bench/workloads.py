"""The workloads of issue 6 (and issue 2, section 10), each run against one peer.

Every workload returns plain numbers; ``bench.run`` prints them side by side. Prompts vary per request (a numbered
story, a numbered NPC) so no peer gets a free prompt-cache hit where the workload means a fresh prompt.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers import LlamaCppDirect, Npc, NpcGrpc, Peer, Result, canonical

STORY = (
    "Story {i}. Once upon a time, in a small village at the edge of a great forest, there lived an old woodcutter "
    "named {name} and his daughter. Every morning, before the sun rose over the hills,"
)
NAMES = ["Aldric", "Bertram", "Cedric", "Dunstan", "Edmund", "Fulk", "Godric", "Hamon", "Ivo", "Jocelin"]
STOP = ["\nUser:"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "line": {"type": "string"},
        "emotion": {"type": "string", "enum": ["calm", "angry", "happy", "afraid"]},
        "action": {"type": "string"},
    },
    "required": ["line", "emotion", "action"],
}
JSON_PROMPT = (
    "Game NPC reply as JSON with the fields line, emotion and action. Scene: the player asks the blacksmith Hilda "
    "whether she can repair a broken sword before nightfall. Reply {i}:"
)


def story(i: int) -> str:
    return canonical(STORY.format(i=i, name=NAMES[i % len(NAMES)]))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ----------------------------------------------------------------------------------------------------- single


@dataclass
class Single:
    ttft_ms: float
    decode_tps: float
    tokens: int


async def single_stream(peer: Peer, reps: int, max_tokens: int) -> Single:
    """One request at a time: median TTFT (fresh ~45-token prompt) and median decode tok/s."""
    await peer.complete(story(900), 8, STOP)  # warm-up: first-request costs are not what we measure
    results = [await peer.complete(story(100 + i), max_tokens, STOP) for i in range(reps)]
    return Single(
        statistics.median(r.ttft_s * 1000 for r in results),
        statistics.median(r.decode_tps for r in results),
        int(statistics.median(r.tokens for r in results)),
    )


# ------------------------------------------------------------------------------------------------ JSON schema


@dataclass
class JsonVsPlain:
    json_tps: float
    plain_tps: float
    json_tokens: int
    plain_tokens: int

    @property
    def ratio(self) -> float:
        return self.json_tps / self.plain_tps if self.plain_tps else float("nan")


async def json_vs_plain(peer: Peer, reps: int, max_tokens: int) -> JsonVsPlain:
    """Decode tok/s with a JSON-schema constraint against the same prompt unconstrained."""
    js: list[Result] = []
    plain: list[Result] = []
    for i in range(reps):
        prompt = canonical(JSON_PROMPT.format(i=i))
        js.append(await peer.complete(prompt, max_tokens, [], json_schema=SCHEMA))
        plain.append(await peer.complete(story(300 + i), max_tokens, STOP))
    return JsonVsPlain(
        statistics.median(r.decode_tps for r in js),
        statistics.median(r.decode_tps for r in plain),
        int(statistics.median(r.tokens for r in js)),
        int(statistics.median(r.tokens for r in plain)),
    )


# ------------------------------------------------------------------------------------------------ concurrency


@dataclass
class Concurrency:
    n: int
    agg_tps: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tokens: int
    wall_s: float


async def concurrent(peer: Peer, n: int, max_tokens: int, base: int) -> Concurrency:
    """``n`` single-shot generations started together: aggregate tok/s over the wall time, TTFT percentiles."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(peer.complete(story(base + i), max_tokens, STOP) for i in range(n)))
    wall = time.perf_counter() - t0
    tokens = sum(r.tokens for r in results)
    ttfts = [r.ttft_s * 1000 for r in results]
    return Concurrency(n, tokens / wall, pct(ttfts, 0.5), pct(ttfts, 0.95), tokens, wall)


# ------------------------------------------------------------------------------------------------------- NPCs

PERSONAS = [
    Npc(
        "bench_smith",
        "Hilda",
        "Traveler",
        "The forge of Ashford is hot and loud. Hilda, the blacksmith, is a broad-shouldered woman who speaks plainly, "
        "values good steel over good manners, and charges fair prices. She has repaired swords for three lords and "
        "distrusts anyone who haggles too long. The village fears bandits on the east road.",
        [
            ("Can you fix my sword?", "Leave it on the anvil. Two silver, ready by dusk."),
            ("Do you sell armour?", "Mail shirts, six silver. Plate is for lords with deep purses."),
            ("Any news from the road?", "Bandits on the east road. Travel by day or not at all."),
        ],
    ),
    Npc(
        "bench_priest",
        "Brother Anselm",
        "Pilgrim",
        "The chapel of Saint Aude stands on a windy hill. Brother Anselm, the old priest, is gentle and patient, "
        "quotes scripture when nervous, and knows every family in the valley. He worries about the sickness in the "
        "lower farms and keeps a ledger of the poor.",
        [
            ("Can I rest here tonight?", "The pews are hard but the roof is sound. Stay, friend."),
            ("What sickness is this?", "A fever in the lower farms. Boil your water and pray."),
            ("Who is the lord here?", "Lord Varen, a fair man, though his tax collector is not."),
        ],
    ),
    Npc(
        "bench_guard",
        "Sergeant Mott",
        "Stranger",
        "The west gate of Carrow is guarded day and night. Sergeant Mott is tired, suspicious of strangers, and "
        "counts the days to his pension. He follows orders to the letter and lets nobody in after the bell.",
        [
            ("Let me through, please.", "Papers first. No papers, no gate."),
            ("When does the gate close?", "At the evening bell. After that you sleep in the ditch."),
            ("Seen anything strange?", "Lights in the marsh. Not my business, and not yours."),
        ],
    ),
    Npc(
        "bench_merchant",
        "Sela",
        "Customer",
        "Sela runs a spice stall in the crowded market of Port Veyra. She is quick-witted, loves to bargain, and "
        "remembers every face. She buys rumours as eagerly as saffron and sells both at a profit.",
        [
            ("What do you sell?", "Saffron, pepper, cinnamon. Rumours cost extra."),
            ("That price is too high.", "Then your soup will be too bland. Final offer: four copper."),
            ("Heard anything about the harbour?", "A black ship came in at dawn. Nobody unloaded it."),
        ],
    ),
]
PLAYER_LINES = [
    "Good day. What do you have for me?",
    "Tell me about yourself.",
    "What is the latest news around here?",
    "Is there any work for a capable traveller?",
    "What should I be careful of?",
    "Thank you. One last question: who can I trust here?",
]


@dataclass
class NpcWorkload:
    conversations: int
    turns: int
    agg_tps: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    followup_ttft_p50_ms: float
    tokens: int
    wall_s: float


async def npc_workload(peer: Peer, conversations: int, turns: int, max_tokens: int, tag: str) -> NpcWorkload:
    """``conversations`` NPC conversations taking turns (each waits for its reply, thinks, speaks again).

    Our server keeps the history (Talk); peers without memory get the whole transcript each turn, built from their
    own earlier replies, as a game would send it.
    """
    rng = random.Random(42)
    ttfts: list[float] = []
    followups: list[float] = []
    tokens = 0

    async def one(c: int) -> None:
        nonlocal tokens
        npc = PERSONAS[c % len(PERSONAS)]
        history: list[tuple[str, str]] = []
        await asyncio.sleep(rng.random() * 0.5)  # NPCs do not all start on the same tick
        for t in range(turns):
            line = PLAYER_LINES[(c + t) % len(PLAYER_LINES)]
            r = await peer.talk(npc, f"{tag}-{c}", history, line, max_tokens)
            ttfts.append(r.ttft_s * 1000)
            if t > 0:
                followups.append(r.ttft_s * 1000)
            tokens += r.tokens
            history.append((line, r.text.strip()))
            await asyncio.sleep(rng.random() * 0.3)  # the player reads and answers

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(conversations)))
    wall = time.perf_counter() - t0
    return NpcWorkload(
        conversations, turns, tokens / wall, pct(ttfts, 0.5), pct(ttfts, 0.95), pct(followups, 0.5), tokens, wall
    )


# ------------------------------------------------------------------------------------------- follow-up TTFT


@dataclass
class FollowUp:
    history_tokens: int
    fresh_ttft_ms: float
    followup_ttft_ms: float
    cold_ttft_ms: float
    cached: int

    @property
    def ratio(self) -> float:
        return self.followup_ttft_ms / self.fresh_ttft_ms if self.fresh_ttft_ms else float("nan")


def long_history(npc: Npc, n_turns: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    topics = [
        "the harvest", "the old bridge", "the duke's hunt", "the winter stores", "the missing goats",
        "the new well", "the traveling players", "the border tax", "the wolf tracks", "the chapel bell",
    ]  # fmt: skip
    turns = []
    for i in range(n_turns):
        topic = rng.choice(topics)
        turns.append(
            (f"What do you think about {topic}, and what should I do about it today?",
             f"{topic.capitalize()} again? Listen well: it is turn {i}, and my answer stays the same, friend.")
        )  # fmt: skip
    return turns


async def followup_ttft(peer: Peer, history_turns: int, count_tokens: Any) -> FollowUp:
    """TTFT of a follow-up turn in a conversation with ~1.5k tokens of history, after another conversation ran in
    between, against the TTFT of a fresh ~50-token prompt."""
    a, b = PERSONAS[0], PERSONAS[1]
    hist_a, hist_b = long_history(a, history_turns, 1), long_history(b, history_turns, 2)
    n_hist = count_tokens(a.transcript(hist_a, PLAYER_LINES[0]))
    if isinstance(peer, NpcGrpc):
        await peer.import_history(a, "followup-a", hist_a)
        await peer.import_history(b, "followup-b", hist_b)
    # Warm both conversations (the first read of 1.5k tokens is the cold cost), interleaved as NPCs would be.
    cold = await peer.talk(a, "followup-a", hist_a, PLAYER_LINES[0], 24)
    hist_a = [*hist_a, (PLAYER_LINES[0], cold.text.strip())]
    other = await peer.talk(b, "followup-b", hist_b, PLAYER_LINES[1], 24)
    hist_b = [*hist_b, (PLAYER_LINES[1], other.text.strip())]
    follow = await peer.talk(a, "followup-a", hist_a, PLAYER_LINES[2], 24)
    fresh = [await peer.complete(story(500 + i), 8, STOP) for i in range(3)]
    return FollowUp(
        n_hist, statistics.median(r.ttft_s * 1000 for r in fresh), follow.ttft_s * 1000, cold.ttft_s * 1000,
        follow.cached,
    )  # fmt: skip


def is_serial(peer: Peer) -> bool:
    return isinstance(peer, LlamaCppDirect)


# ------------------------------------------------------------------------- issue 10: long conversations


@dataclass
class LongConversation:
    stored_turns: int
    first_ttft_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_max_ms: float
    lines: int
    ttfts_ms: list[float]
    #: p95 of the lines after the first (the first reads the whole window: after an import nothing is cached).
    rest_p95_ms: float = float("nan")
    #: p50 of an empty conversation's lines run right after this one on the same server, with the same other
    #: conversations' KV resident (with a unified KV cache every line's attention spans the cells in use).
    empty_after_p50_ms: float = float("nan")


#: The most turns one ImportConversation takes (npcserver.core.limits).
MAX_IMPORT_TURNS = 10_000


def fit_history(npc: Npc, turns: list[tuple[str, str]], line: str, budget: int, count_tokens: Any) -> int:
    """For a peer without memory: how many of the oldest turns a client drops, one at a time, to fit ``budget``
    (what a game does on its own, and what the server did before issue 10)."""
    lo, hi = 0, len(turns)
    while lo < hi:  # the fewest dropped that fit (a transcript never grows when older turns leave it)
        mid = (lo + hi) // 2
        if count_tokens(npc.transcript(turns[mid:], line)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def long_conversation(
    peer: Peer, stored: int, lines: int, max_tokens: int, ctx: int, count_tokens: Any, tag: str, *, offset: int = 0
) -> LongConversation:
    """Issue 10 section 1: a conversation whose ``stored`` turns are imported first, then ``lines`` consecutive
    lines; TTFT of each (the first is the first read of the window). Our server holds the history; a peer without
    memory gets the newest turns that fit its window, the oldest dropped one at a time."""
    npc = PERSONAS[0]
    history = long_history(npc, stored, 10 + stored)
    conv = f"{tag}-{stored}"
    if isinstance(peer, NpcGrpc):
        if stored <= MAX_IMPORT_TURNS:
            await peer.import_history(npc, conv, history)
        else:
            # More than one import may carry: written straight into the server's SQLite file, with the token
            # counts the server would have stored (the transcript line, as core.prompt renders it).
            from npcserver.store.base import Turn
            from npcserver.store.sqlite import SqliteStore

            await peer.ensure_persona(npc)
            db = SqliteStore(peer.server.data_dir / "npcserver.db")
            try:
                turns = [
                    Turn(p, n, tokens=count_tokens(f"{npc.player}: {p}\n{npc.display_name}: {n}\n") - 1)
                    for p, n in history
                ]
                await asyncio.to_thread(db.replace_turns, npc.id, conv, turns)
            finally:
                db.close()
    ttfts: list[float] = []
    for i in range(lines):
        line = PLAYER_LINES[(i + offset) % len(PLAYER_LINES)]
        shown = history
        if not isinstance(peer, NpcGrpc):
            shown = history[fit_history(npc, history, line, ctx - max_tokens - 8, count_tokens) :]
        r = await peer.talk(npc, conv, shown, line, max_tokens)
        ttfts.append(r.ttft_s * 1000)
        history = [*history, (line, r.text.strip())]
    return LongConversation(
        stored, ttfts[0], pct(ttfts, 0.5), pct(ttfts, 0.95), max(ttfts), lines, [round(t, 1) for t in ttfts],
        pct(ttfts[1:], 0.95),
    )  # fmt: skip


# ------------------------------------------------------------------------------ issue 10: thousands of NPCs


@dataclass
class Town:
    conversations: int
    lines: int
    first_ttft_p50_ms: float
    followup_ttft_p50_ms: float
    followup_ttft_p95_ms: float
    resident_followup_p50_ms: float
    wall_s: float
    rss_mb: float
    disk_mb: float
    idle_conversations: int
    #: A 4th line, one request at a time, to the conversations idle longest (their KV long out of every slot): the
    #: cost of coming back without other requests in the way, against the resident follow-up measured the same way.
    idle_probe_p50_ms: float = float("nan")
    idle_probe_ms: list[float] = field(default_factory=list)


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _dir_mb(folder: Path | None) -> float:
    if folder is None or not folder.exists():
        return 0.0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


async def town(
    peer: Peer, conversations: int, clients: int, max_tokens: int, tag: str, *, pid: int | None, kv_dir: Path | None
) -> Town:
    """Issue 10 section 2: ``conversations`` NPC conversations, each coming back for a second and a third line in
    random order, ``clients`` requests in flight at once (one per slot). Follow-up TTFT against a resident
    conversation's (8 conversations that never leave their slots), the server's RSS and the KV files on disk."""
    # Resident baseline: as many conversations as clients, three lines each, never evicted.
    resident: list[float] = []
    for c in range(clients):
        npc = PERSONAS[c % len(PERSONAS)]
        hist: list[tuple[str, str]] = []
        for t in range(3):
            line = PLAYER_LINES[(c + t) % len(PLAYER_LINES)]
            r = await peer.talk(npc, f"{tag}-resident-{c}", hist, line, max_tokens)
            if t:
                resident.append(r.ttft_s * 1000)
            hist.append((line, r.text.strip()))
    rng = random.Random(10)
    order = [c for c in range(conversations) for _ in range(3)]
    rng.shuffle(order)
    histories: dict[int, list[tuple[str, str]]] = {c: [] for c in range(conversations)}
    busy: dict[int, asyncio.Event] = {}
    firsts: list[float] = []
    follows: list[float] = []
    finished: dict[int, float] = {}
    queue = deque(order)

    async def client() -> None:
        while queue:
            c = queue.popleft()
            while c in busy:  # this conversation's previous line is still being answered
                await busy[c].wait()
            busy[c] = done = asyncio.Event()
            hist = histories[c]
            line = PLAYER_LINES[(c + len(hist)) % len(PLAYER_LINES)]
            r = await peer.talk(PERSONAS[c % len(PERSONAS)], f"{tag}-{c}", hist, line, max_tokens)
            (follows if hist else firsts).append(r.ttft_s * 1000)
            hist.append((line, r.text.strip()))
            finished[c] = time.perf_counter()
            del busy[c]
            done.set()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    rss, disk = _rss_mb(pid), _dir_mb(kv_dir)
    probe: list[float] = []
    for c in sorted(finished, key=finished.__getitem__)[:PROBES]:
        hist = histories[c]
        line = PLAYER_LINES[(c + len(hist)) % len(PLAYER_LINES)]
        r = await peer.talk(PERSONAS[c % len(PERSONAS)], f"{tag}-{c}", hist, line, max_tokens)
        probe.append(r.ttft_s * 1000)
    return Town(
        conversations, len(order), pct(firsts, 0.5), pct(follows, 0.5), pct(follows, 0.95), pct(resident, 0.5),
        wall, rss, disk, conversations, pct(probe, 0.5), [round(x, 1) for x in probe],
    )  # fmt: skip


#: Conversations the town's idle probe returns to.
PROBES = 16


# ------------------------------------------------------------------------- issue 10: shared world prefix

WORLD_FACTS = [
    "The realm of Esterhold lies between the Greywater river and the Ironback mountains.",
    "Its capital, Carrow, is ruled by Queen Maelis, who came to the throne after the long winter war.",
    "Three guilds hold the real power: the Smiths of Ashford, the Salt Merchants of Port Veyra, and the Lantern "
    "Order, who keep the roads lit and the old shrines clean.",
    "Coins are the gold crown, the silver mark and the copper penny; twelve pennies make a mark.",
    "Bandits have troubled the east road since the bridge at Holloway fell in the spring floods.",
    "The marshes south of Carrow glow at night, and the common folk say the drowned king walks there.",
    "Every village keeps a bell; three rings mean fire, five mean raiders, and a long toll means a death.",
    "Travellers are welcome at any chapel of Saint Aude for one night, but must leave before the morning hymn.",
]


def world_preamble(count_tokens: Any, target: int = 1000) -> str:
    """A lore text of about ``target`` tokens that every NPC of the world workload starts its prompt with."""
    parts: list[str] = []
    i = 0
    while count_tokens(" ".join(parts)) < target:
        parts.append(f"({i // len(WORLD_FACTS) + 1}.{i % len(WORLD_FACTS) + 1}) {WORLD_FACTS[i % len(WORLD_FACTS)]}")
        i += 1
    return " ".join(parts)


@dataclass
class World:
    npcs: int
    preamble_tokens: int
    first_ttft_ms: float
    others_ttft_p50_ms: float
    others_ttft_max_ms: float

    @property
    def ratio(self) -> float:
        return self.others_ttft_p50_ms / self.first_ttft_ms if self.first_ttft_ms else float("nan")


async def shared_world(peer: Peer, npcs: int, max_tokens: int, count_tokens: Any, tag: str) -> World:
    """Issue 10 section 3: ``npcs`` personas whose system prompts start with the same ~1,000-token world text, then
    their own description; each gets its first line in turn. NPC 2..n should find the world already read."""
    world = world_preamble(count_tokens)
    ttfts: list[float] = []
    for n in range(npcs):
        base = PERSONAS[n % len(PERSONAS)]
        npc = Npc(
            f"{tag}_world_{n}", f"{base.display_name} {n}", base.player,
            f"{world}\n\n{base.system_prompt}", base.examples,
        )  # fmt: skip
        r = await peer.talk(npc, f"{tag}-world-{n}", [], PLAYER_LINES[n % len(PLAYER_LINES)], max_tokens)
        ttfts.append(r.ttft_s * 1000)
    others = ttfts[1:]
    return World(npcs, count_tokens(world), ttfts[0], pct(others, 0.5), max(others))
