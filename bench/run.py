"""``python -m bench``: issue 6's side-by-side benchmark (and issue 2's gRPC-vs-library numbers) in one run.

Prints tables and ratios; asserts nothing about speed. Every peer runs on the same GGUF with the same thread count,
one peer at a time (so they never compete for the cores), and the raw numbers go to ``bench/out/<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import workloads as w
from bench.native import ensure_native_tools, llama_cpp_version
from bench.peers import LlamaCppDirect, LlamaCppServer, LlamaServer, NpcGrpc, NpcHttp, NpcServer, Peer, bench_env

OUT = Path(__file__).resolve().parent / "out"
PEER_NAMES = ("npc-batched", "llama-cpp-python", "llama_cpp.server", "llama-server")


def memory_bandwidth_gbs() -> float:
    """Single-threaded streaming read bandwidth (numpy sum over 512 MB), best of 5: a lower bound for the box."""
    a = np.ones(64 * 1024 * 1024, dtype=np.float64)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return idle, sum(fields)


def cpu_idle(window_s: float = 1.0) -> float:
    """Fraction of the machine's CPU time that was idle over the next ``window_s`` seconds."""
    i0, t0 = _cpu_times()
    time.sleep(window_s)
    i1, t1 = _cpu_times()
    return (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait_s: float, threshold: float = 0.9) -> str:
    """Waits (up to ``max_wait_s``) until the machine is idle, so other processes do not skew a peer's numbers."""
    start = time.monotonic()
    idle = cpu_idle()
    while idle < threshold and time.monotonic() - start < max_wait_s:
        idle = cpu_idle()
    waited = time.monotonic() - start
    return f"idle {idle:.0%} after waiting {waited:.0f}s"


def llama_bench(binary: Path, model: Path, threads: int, omp: str) -> dict[str, float]:
    out = subprocess.run(
        [str(binary), "-m", str(model), "-t", str(threads), "-p", "512", "-n", "128", "-r", "3", "-o", "json"],
        check=True, capture_output=True, text=True, env=bench_env(omp),
    )  # fmt: skip
    rows = json.loads(out.stdout)
    res: dict[str, float] = {}
    for row in rows:
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        res[key] = float(row["avg_ts"])
    return res


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [f"\n## {title}", "| " + " | ".join(h.ljust(wd) for h, wd in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


async def run_peer(peer: Peer, args: argparse.Namespace, count_tokens: Any, results: dict[str, Any]) -> None:
    name = peer.name
    quiet = await asyncio.to_thread(wait_quiet, args.quiet_wait)
    results.setdefault("_quiet", {})[name] = quiet
    logging.info("peer %s: starting (%s)", name, quiet)
    await peer.start()
    try:
        r: dict[str, Any] = {}
        r["single"] = await w.single_stream(peer, args.reps, args.max_tokens)
        logging.info("  %s single: %s", name, r["single"])
        if "json" in args.workloads:
            r["json"] = await w.json_vs_plain(peer, args.reps, args.json_tokens)
            logging.info("  %s json: %s", name, r["json"])
        if "followup" in args.workloads:
            r["followup"] = await w.followup_ttft(peer, args.history_turns, count_tokens)
            logging.info("  %s followup: %s", name, r["followup"])
        if "concurrency" in args.workloads and not w.is_serial(peer):
            r["concurrency"] = []
            for i, n in enumerate(args.concurrency):
                c = await w.concurrent(peer, n, args.conc_tokens, base=1000 + 100 * i)
                r["concurrency"].append(c)
                logging.info("  %s concurrency %d: %s", name, n, c)
        if "npc" in args.workloads and not w.is_serial(peer):
            r["npc"] = await w.npc_workload(peer, args.npc_conversations, args.npc_turns, args.npc_tokens, "npc")
            logging.info("  %s npc: %s", name, r["npc"])
        if "world" in args.workloads:
            r["world"] = await w.shared_world(peer, args.world_npcs, args.world_tokens, count_tokens, "bench")
            logging.info("  %s world: %s", name, r["world"])
        if "long" in args.workloads:
            r["long"] = []
            ours = isinstance(peer, NpcGrpc)
            for stored in args.long_stored:
                if not ours and stored > max(x for x in args.long_stored if x <= 1000):
                    continue  # a client that drops old turns itself sends the same window at 1,000 and at 20,000
                lc = await w.long_conversation(
                    peer, stored, args.long_lines, args.long_tokens, args.ctx, count_tokens, "long"
                )
                if stored:
                    # Other lines than every other empty conversation's: the same lines would give the same
                    # prompts, which the engine copies whole from that conversation's slot.
                    empty = await w.long_conversation(
                        peer, 0, args.long_lines, args.long_tokens, args.ctx, count_tokens, f"long-after-{stored}",
                        offset=1 + args.long_stored.index(stored),
                    )  # fmt: skip
                    lc.empty_after_p50_ms = empty.ttft_p50_ms
                r["long"].append(lc)
                logging.info("  %s long %d: %s", name, stored, lc)
        if "town" in args.workloads and not w.is_serial(peer):
            server = peer.server if isinstance(peer, NpcGrpc) else None
            proc = server.process.proc if server is not None else getattr(getattr(peer, "process", None), "proc", None)
            r["town"] = await w.town(
                peer, args.town_conversations, args.slots, args.town_tokens, "town",
                pid=proc.pid if proc is not None else None,
                kv_dir=server.data_dir / "kv-cache" if server is not None else None,
            )  # fmt: skip
            logging.info("  %s town: %s", name, r["town"])
        results[name] = r
    finally:
        await peer.stop()


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    out: list[str] = []
    quiet = meta.get("quiet", {})
    peers = list(results)
    ref_bench = meta.get("llama_bench", {})
    tg = ref_bench.get("tg128", float("nan"))
    out.append(f"# npcserver benchmark, {meta['date']}")
    out.append(
        f"model {meta['model']} ({meta['model_mb']:.0f} MB), {meta['threads']} threads, OMP_WAIT_POLICY={meta['omp']}, "
        f"llama-cpp-python {meta['llama_cpp_python']}, {meta['cpu']}; load average before: {meta['load_before']}, "
        f"after: {meta['load_after']}"
    )
    if quiet:
        out.append("machine state when each peer started: " + "; ".join(f"{k}: {v}" for k, v in quiet.items()))
    out.append(
        table(
            "Physical ceiling and llama-bench",
            ["measure", "value"],
            [
                ["memory read bandwidth (1 thread, numpy), GB/s", meta["bandwidth_gbs"]],
                ["ceiling = bandwidth / model bytes, tok/s", meta["ceiling_tps"]],
                ["llama-bench tg128, tok/s", tg],
                ["llama-bench pp512, tok/s", ref_bench.get("pp512", float("nan"))],
            ],
        )
    )
    rows = []
    for p in peers:
        s = results[p].get("single")
        if s:
            rows.append([p, s.ttft_ms, s.decode_tps, s.tokens, ratio(s.decode_tps, tg)])
    out.append(table("Single stream", ["peer", "TTFT ms", "decode tok/s", "tokens", "x llama-bench tg128"], rows))
    rows = []
    for p in peers:
        j = results[p].get("json")
        if j:
            rows.append([p, j.plain_tps, j.json_tps, j.ratio, j.json_tokens])
    out.append(
        table("JSON schema vs unconstrained", ["peer", "plain tok/s", "json tok/s", "json/plain", "json tokens"], rows)
    )
    rows = []
    for p in peers:
        f = results[p].get("followup")
        if f:
            rows.append([p, f.history_tokens, f.cold_ttft_ms, f.followup_ttft_ms, f.fresh_ttft_ms, f.ratio, f.cached])
    out.append(
        table(
            "Follow-up turn with ~1.5k tokens of history (another conversation in between) vs a fresh ~50-token prompt",
            ["peer", "history tok", "first read ms", "follow-up TTFT ms", "fresh TTFT ms", "follow-up/fresh", "cached"],
            rows,
        )
    )
    rows = []
    for p in peers:
        cs = results[p].get("concurrency") or []
        one = next((c.agg_tps for c in cs if c.n == 1), float("nan"))
        for c in cs:
            rows.append([p, c.n, c.agg_tps, ratio(c.agg_tps, one), c.ttft_p50_ms, c.ttft_p95_ms, c.tokens])
    out.append(
        table(
            "Concurrent single-shot generations",
            ["peer", "n", "agg tok/s", "x n=1", "TTFT p50 ms", "TTFT p95 ms", "tokens"],
            rows,
        )
    )
    rows = []
    for p in peers:
        n = results[p].get("npc")
        if n:
            rows.append(
                [
                    p,
                    f"{n.conversations}x{n.turns}",
                    n.agg_tps,
                    n.ttft_p50_ms,
                    n.ttft_p95_ms,
                    n.followup_ttft_p50_ms,
                    n.tokens,
                    n.wall_s,
                ]
            )
    out.append(
        table(
            "NPC workload: conversations taking turns",
            [
                "peer",
                "convs x turns",
                "agg tok/s",
                "TTFT p50 ms",
                "TTFT p95 ms",
                "follow-up TTFT p50 ms",
                "tokens",
                "wall s",
            ],
            rows,
        )
    )
    out.extend(report_round2(results))
    out.append("\n## Ratios against the targets")
    out.extend(targets(results, tg))
    return "\n".join(out)


def report_round2(results: dict[str, Any]) -> list[str]:
    """Issue 10's tables: long conversations, a town of NPCs, a shared world prefix (each with its target)."""
    out: list[str] = []
    rows = []
    for p in results:
        longs = results[p].get("long") or []
        empty = next((lc.ttft_p50_ms for lc in longs if lc.stored_turns == 0), float("nan"))
        for lc in longs:
            rows.append(
                [
                    p, lc.stored_turns, lc.first_ttft_ms, lc.ttft_p50_ms, lc.ttft_p95_ms, lc.rest_p95_ms,
                    ratio(lc.ttft_p50_ms, empty), ratio(lc.ttft_p95_ms, empty), ratio(lc.rest_p95_ms, empty),
                    lc.empty_after_p50_ms, ratio(lc.ttft_p50_ms, lc.empty_after_p50_ms),
                ]
            )  # fmt: skip
    if rows:
        out.append(
            table(
                "Long conversations: stored turns imported, then consecutive lines (target p50 <= 1.2x and "
                "p95 <= 3x the empty history's p50)",
                ["peer", "stored turns", "first line ms", "p50 ms", "p95 ms", "p95 ms, lines 2+", "p50 / empty p50",
                 "p95 / empty p50", "p95 lines 2+ / empty p50", "empty p50 ms, same server after",
                 "p50 / that"],
                rows,
            )
        )  # fmt: skip
    rows = []
    for p in results:
        t = results[p].get("town")
        if t:
            rows.append(
                [
                    p, f"{t.conversations} x 3", t.first_ttft_p50_ms, t.followup_ttft_p50_ms, t.followup_ttft_p95_ms,
                    t.resident_followup_p50_ms, ratio(t.followup_ttft_p50_ms, t.resident_followup_p50_ms),
                    t.idle_probe_p50_ms, ratio(t.idle_probe_p50_ms, t.resident_followup_p50_ms), t.wall_s,
                    t.rss_mb, t.disk_mb / max(t.idle_conversations, 1),
                ]
            )  # fmt: skip
    if rows:
        out.append(
            table(
                "A town of NPCs: each conversation comes back for a 2nd and 3rd line in random order, one request "
                "per slot in flight",
                ["peer", "conversations x lines", "first line TTFT p50 ms", "follow-up TTFT p50 ms",
                 "follow-up TTFT p95 ms", "resident follow-up p50 ms", "follow-up / resident",
                 "idle return p50 ms (one at a time)", "idle return / resident", "wall s",
                 "server RSS MB", "disk MB per idle NPC"],
                rows,
            )
        )  # fmt: skip
    rows = []
    for p in results:
        wd = results[p].get("world")
        if wd:
            rows.append([p, wd.npcs, wd.preamble_tokens, wd.first_ttft_ms, wd.others_ttft_p50_ms,
                         wd.others_ttft_max_ms, wd.ratio])  # fmt: skip
    if rows:
        out.append(
            table(
                "Shared world prefix: first lines of NPCs whose prompts start with the same world text (target: "
                "NPC 2..n at most 0.3x NPC 1)",
                ["peer", "NPCs", "world tokens", "NPC 1 TTFT ms", "NPC 2..n TTFT p50 ms", "NPC 2..n max ms",
                 "p50 / NPC 1"],
                rows,
            )
        )  # fmt: skip
    return out


def targets(results: dict[str, Any], tg: float) -> list[str]:
    lines: list[str] = []
    ours = next((p for p in results if p.startswith("npc-grpc")), None)
    direct = results.get("llama-cpp-python")
    native = next((p for p in results if p.startswith("llama-server")), None)

    def line(label: str, value: float, target: str, ok: bool | None) -> None:
        mark = "" if ok is None else (" (met)" if ok else " (MISSED)")
        lines.append(f"- {label}: {_fmt(value)} (target {target}){mark}")

    if ours is not None:
        peer = ours
        r = results[peer]
        s = r.get("single")
        if s:
            v = ratio(s.decode_tps, tg)
            line(f"{peer} single-stream decode / llama-bench tg128", v, ">= 0.95", v >= 0.95)
            if direct and direct.get("single"):
                d = direct["single"]
                line(
                    f"{peer} decode tok/s / llama-cpp-python direct",
                    ratio(s.decode_tps, d.decode_tps),
                    "issue 2: report",
                    None,
                )
                line(
                    f"{peer} TTFT / llama-cpp-python direct TTFT", ratio(s.ttft_ms, d.ttft_ms), "issue 2: report", None
                )
        f = r.get("followup")
        if f:
            line(f"{peer} follow-up TTFT (1.5k history) / fresh 50-token TTFT", f.ratio, "<= 1.2", f.ratio <= 1.2)
        cs = {c.n: c for c in r.get("concurrency") or []}
        if 8 in cs and 1 in cs:
            v = ratio(cs[8].agg_tps, cs[1].agg_tps)
            line(f"{peer} 8 concurrent agg tok/s / one stream", v, ">= 2", v >= 2)
            if native and 8 in {c.n for c in results[native].get("concurrency") or []}:
                nat = {c.n: c for c in results[native]["concurrency"]}[8]
                v = ratio(cs[8].agg_tps, nat.agg_tps)
                line(f"{peer} 8 concurrent agg tok/s / {native}", v, ">= 0.95", v >= 0.95)
        n = r.get("npc")
        if n and native and results[native].get("npc"):
            nn = results[native]["npc"]
            v = ratio(n.agg_tps, nn.agg_tps)
            line(f"{peer} NPC workload agg tok/s / {native}", v, ">= 1.2", v >= 1.2)
            v = ratio(nn.ttft_p95_ms, n.ttft_p95_ms)
            line(f"{peer} NPC workload p95 TTFT, {native} / ours (higher is better)", v, ">= 1.2", v >= 1.2)
        j = r.get("json")
        if j:
            line(f"{peer} JSON-schema tok/s / unconstrained", j.ratio, ">= 0.85", j.ratio >= 0.85)
    for p, r in results.items():
        if p == ours:
            continue
        if r.get("json"):
            line(f"{p} JSON-schema tok/s / unconstrained", r["json"].ratio, "peer, for comparison", None)
        if r.get("followup"):
            line(f"{p} follow-up TTFT / fresh TTFT", r["followup"].ratio, "peer, for comparison", None)
    return lines


def _jsonable(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


async def amain(args: argparse.Namespace) -> int:
    from npcserver.engine.model import default_cache_dir, resolve_model_path

    model = Path(args.model) if args.model else resolve_model_path(None, default_cache_dir())
    tools = ensure_native_tools()
    if args.template:
        # A copy of the model carrying a real instruct template: every peer gets chat messages and renders them.
        from bench.native import CACHE
        from bench.template_gguf import make_copy

        folder = CACHE / "templates"
        folder.mkdir(parents=True, exist_ok=True)
        model = make_copy(model, args.template, folder / f"{model.stem}-{args.template}.gguf")
    from llama_cpp import Llama

    tok = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count_tokens(text: str) -> int:
        return len(tok.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": model.name + (f" (chat template: {args.template})" if args.template else ""),
        "model_mb": model.stat().st_size / 1e6,
        "threads": args.threads,
        "omp": args.omp,
        "llama_cpp_python": llama_cpp_version(),
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    meta["bandwidth_gbs"] = memory_bandwidth_gbs()
    meta["ceiling_tps"] = meta["bandwidth_gbs"] * 1e9 / model.stat().st_size
    if "llama-bench" not in args.skip:
        logging.info("llama-bench (%s) ...", await asyncio.to_thread(wait_quiet, args.quiet_wait))
        meta["llama_bench"] = llama_bench(tools["llama-bench"], model, args.threads, args.omp)
        logging.info("  %s", meta["llama_bench"])

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="npcbench-") as tmp:
        for name in args.peers:
            peer_list: list[Peer]
            server: NpcServer | None = None
            if name == "npc-batched":
                extra = {"NPCSERVER_KV_DISK_MB": str(args.kv_disk_mb), "NPCSERVER_RAM_CACHE_MB": str(args.ram_cache_mb)}
                server = NpcServer(
                    model, args.threads, args.ctx, args.parallel, Path(tmp) / "npc", args.omp, extra_env=extra
                )
                await server.start()
                peer_list = [NpcGrpc(server)]
                if args.http and server.http_url:
                    peer_list.append(NpcHttp(server))
            elif name == "llama-cpp-python":
                peer_list = [LlamaCppDirect(model, args.threads, args.ctx)]
            elif name == "llama_cpp.server":
                peer_list = [LlamaCppServer(model, args.threads, args.ctx, args.omp)]
            elif name == "llama-server":
                peer_list = [LlamaServer(tools["llama-server"], model, args.threads, args.ctx, args.slots, args.omp)]
            else:
                raise SystemExit(f"unknown peer {name!r}; choose from {', '.join(PEER_NAMES)}")
            for peer in peer_list:
                peer.chat_template = bool(args.template)
            try:
                for i, peer in enumerate(peer_list):
                    if i > 0:  # the HTTP door of the same server: only the single-stream and JSON numbers
                        saved = args.workloads
                        args.workloads = [x for x in saved if x in ("json",)]
                        try:
                            await run_peer(peer, args, count_tokens, results)
                        finally:
                            args.workloads = saved
                    else:
                        await run_peer(peer, args, count_tokens, results)
            finally:
                if server is not None:
                    await server.stop()
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["quiet"] = results.pop("_quiet", {})
    text = report(results, meta)
    print(text)
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (OUT / f"{stamp}.json").write_text(json.dumps({"meta": meta, "results": _jsonable(results)}, indent=1, default=str))
    (OUT / f"{stamp}.md").write_text(text + "\n")
    print(f"\n(raw numbers: {OUT / (stamp + '.json')})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M Q4_K_M)")
    ap.add_argument(
        "--template",
        choices=["gemma3", "llama3", "qwen2_5", "mistral", "phi3"],
        help="run on a copy of the model carrying this family's chat template (bench.template_gguf): chat messages "
        "instead of transcript text, rendered by each peer with the GGUF's template",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence / slot")
    ap.add_argument("--parallel", type=int, default=16, help="sequences our engine decodes together")
    ap.add_argument("--slots", type=int, default=8, help="llama-server -np")
    ap.add_argument("--omp", default="passive", choices=["passive", "active"], help="OMP_WAIT_POLICY for every peer")
    ap.add_argument("--peers", nargs="+", default=list(PEER_NAMES), choices=PEER_NAMES)
    ap.add_argument("--workloads", nargs="+", default=["json", "followup", "concurrency", "npc"])
    ap.add_argument("--skip", nargs="*", default=[], help="'llama-bench' to skip it")
    ap.add_argument("--no-http", dest="http", action="store_false", help="skip our HTTP door")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json-tokens", type=int, default=96)
    ap.add_argument("--conc-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--npc-conversations", type=int, default=16)
    ap.add_argument("--npc-turns", type=int, default=4)
    ap.add_argument("--npc-tokens", type=int, default=48)
    ap.add_argument("--history-turns", type=int, default=27, help="turns of imported history (~1.5k tokens)")
    # Issue 10's workloads (not in the default set): --workloads long town world
    ap.add_argument("--long-stored", type=int, nargs="+", default=[0, 100, 1000, 5000, 20000])
    ap.add_argument("--long-lines", type=int, default=20, help="consecutive lines after the import")
    ap.add_argument("--long-tokens", type=int, default=16)
    ap.add_argument("--town-conversations", type=int, default=1000)
    ap.add_argument("--town-tokens", type=int, default=16)
    ap.add_argument("--world-npcs", type=int, default=16)
    ap.add_argument("--world-tokens", type=int, default=16)
    ap.add_argument("--ram-cache-mb", type=int, default=256, help="our server's RAM tier for evicted KV")
    ap.add_argument("--kv-disk-mb", type=int, default=8192, help="our server's disk tier for evicted KV")
    ap.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for an idle machine per peer")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(amain(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
