"""The peers the benchmark compares, behind one small async interface.

Every peer gets the same prompt text and sampling (temperature 0, repeat penalty as stated) on the same GGUF file and
thread count, and is timed from the client's side: TTFT is the time to the first streamed text, decode tok/s counts
completion tokens after the first over the time after the first.

- ``npc-grpc`` / ``npc-http``: our server (``python -m npcserver serve``) over gRPC and over the HTTP door (OpenAI
  REST, SSE). Raw completions go through the chat API as a ``continue_final_message`` assistant message, whose
  transcript rendering is exactly ``"Assistant: " + text``; the other peers are sent that same text.
- ``llama-cpp-python``: the ``Llama`` class called in-process, streaming (what issue 2 compares against).
- ``llama_cpp.server``: llama-cpp-python's own OpenAI server.
- ``llama-server``: llama.cpp's native server with ``-np N`` slots and continuous batching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pbg
from npcserver.core.prompt import ASSISTANT_NAME

REPO = Path(__file__).resolve().parent.parent
READY = re.compile(r"npcserver ready: grpc=(\S+)(?: http=(\S+))?")


@dataclass
class Result:
    """One streamed generation, timed by the client."""

    ttft_s: float
    total_s: float
    tokens: int
    text: str
    cached: int = -1  # prompt tokens the server reported as reused (-1: not reported)
    t_first: float = 0.0
    t_last: float = 0.0

    @property
    def decode_tps(self) -> float:
        span = self.t_last - self.t_first
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


@dataclass
class Npc:
    """A bench persona, rendered the way the core renders a Talk for a model without a chat template."""

    id: str
    display_name: str
    player: str
    system_prompt: str
    examples: list[tuple[str, str]]

    def transcript(self, turns: list[tuple[str, str]], line: str) -> str:
        def one(text: str) -> str:
            return " ".join(text.split("\n")).strip()

        text = self.system_prompt.strip() + "\n\n"
        text += "".join(f"{self.player}: {one(p)}\n{self.display_name}: {one(n)}\n" for p, n in self.examples)
        text += "".join(f"{self.player}: {one(p)}\n{self.display_name}: {one(n)}\n" for p, n in turns)
        return text + f"{self.player}: {one(line)}\n{self.display_name}:"

    def messages(self, turns: list[tuple[str, str]], line: str) -> list[dict[str, str]]:
        """The same turn as chat messages, for a model with a chat template: what our server renders a Talk from
        (the persona as the system message, the examples and turns as user/assistant pairs)."""
        out = [{"role": "system", "content": self.system_prompt.strip()}]
        for p, n in [*self.examples, *turns]:
            out += [{"role": "user", "content": p}, {"role": "assistant", "content": n}]
        return [*out, {"role": "user", "content": line}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """A server or library that completes text: ``complete``, and ``talk`` for one NPC turn."""

    name = "peer"
    concurrent = True  # False: requests are served one at a time by construction
    #: The model has a chat template (``--template``): completions are sent as one user message and turns as chat
    #: messages, which each peer renders with the GGUF's template, instead of transcript text.
    chat_template = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def complete(
        self, text: str, max_tokens: int, stop: list[str], *, json_schema: dict[str, Any] | None = None,
        repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        raise NotImplementedError

    async def talk(
        self, npc: Npc, conversation: str, turns: list[tuple[str, str]], line: str, max_tokens: int
    ) -> Result:
        """One NPC turn. The default sends the rendered transcript as a raw completion, or on a template model the
        chat messages (the server keeps no memory)."""
        if self.chat_template:
            return await self.chat_complete(npc.messages(turns, line), max_tokens, [])
        return await self.complete(npc.transcript(turns, line), max_tokens, ["\n"])

    async def chat_complete(
        self, messages: list[dict[str, str]], max_tokens: int, stop: list[str], *,
        json_schema: dict[str, Any] | None = None, repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        raise NotImplementedError(f"{self.name} has no chat API in this benchmark")


# ------------------------------------------------------------------------------------------------- subprocesses


class _Process:
    def __init__(self, cmd: list[str], env: dict[str, str], log_name: str) -> None:
        self.cmd = cmd
        self.env = env
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.log_name = log_name

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.log_name} exited ({self.proc.returncode}):\n" + "".join(self.log[-40:]))


def bench_env(omp_wait: str) -> dict[str, str]:
    """The environment of every peer process: the same OpenMP wait policy for all (``--omp``)."""
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = omp_wait
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------------- our server


class NpcServer:
    """One ``python -m npcserver serve`` process; its two doors are two peers."""

    def __init__(
        self,
        model: Path,
        threads: int,
        ctx: int,
        parallel: int,
        data_dir: Path,
        omp: str,
        extra_env: dict[str, str] | None = None,
    ):
        env = bench_env(omp)
        env.update(
            {
                "NPCSERVER_MODEL": str(model),
                "NPCSERVER_THREADS": str(threads),
                "NPCSERVER_CTX_SIZE": str(ctx),
                "NPCSERVER_PARALLEL": str(parallel),
                "NPCSERVER_MAX_QUEUE": "256",
                "NPCSERVER_GRPC_PORT": "0",
                "NPCSERVER_HTTP_PORT": "0",
                "NPCSERVER_DATA_DIR": str(data_dir),
                "NPCSERVER_LOG_LEVEL": "WARNING",
                "NPCSERVER_PRESETS_FILE": str(data_dir / "bench-presets.toml"),
            }
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        # Greedy and no repeat penalty, like every other peer's requests (Talk takes sampling from the preset).
        (data_dir / "bench-presets.toml").write_text(
            '[bench]\ndescription = "benchmark: greedy, no penalty"\n'
            "temperature = 0.0\ntop_p = 1.0\ntop_k = 40\nmin_p = 0.0\nrepeat_penalty = 1.0\n"
        )
        env.update(extra_env or {})
        self.data_dir = data_dir
        self.process = _Process([sys.executable, "-m", "npcserver", "serve"], env, "npcserver")
        self.grpc_target = ""
        self.http_url = ""

    async def start(self) -> None:
        self.process.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            self.process.check_alive()
            for line in self.process.log:
                m = READY.search(line)
                if m:
                    self.grpc_target = m.group(1)
                    http = m.group(2) or ""
                    self.http_url = http if not http or http.startswith("http") else f"http://{http}"
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError("npcserver did not get ready:\n" + "".join(self.process.log[-40:]))

    async def stop(self) -> None:
        self.process.stop()


class NpcGrpc(Peer):
    concurrent = True

    def __init__(self, server: NpcServer) -> None:
        self.server = server
        self.name = "npc-grpc (batched)"
        self.channel: grpc.aio.Channel | None = None
        self._personas: set[str] = set()

    async def start(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.server.grpc_target)
        self.chat = pbg.ChatServiceStub(self.channel)
        self.conv = pbg.ConversationServiceStub(self.channel)
        self.personas = pbg.PersonaServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def _timed(self, stream: Any) -> Result:
        t0 = time.perf_counter()
        first = last = 0.0
        parts: list[str] = []
        tokens = 0
        cached = -1
        async for resp in stream:
            if resp.HasField("delta"):
                now = time.perf_counter()
                if resp.delta.content:
                    parts.append(resp.delta.content)
                    first = first or now
                    last = now
            else:
                tokens = resp.final.usage.completion_tokens
                cached = resp.final.timings.cached_prompt_tokens
        end = time.perf_counter()
        first = first or end
        return Result(first - t0, end - t0, tokens, "".join(parts), cached, first, last or end)

    async def complete(
        self, text: str, max_tokens: int, stop: list[str], *, json_schema: dict[str, Any] | None = None,
        repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        fmt = pb.ResponseFormat()
        if json_schema is not None:
            fmt = pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name="reply", schema=json.dumps(json_schema), strict=True),
            )
        # On a template model the text is the user's message; otherwise an assistant message to continue, whose
        # transcript is exactly "Assistant: " + text.
        message = pb.ChatMessage(role="user" if self.chat_template else "assistant", content=text)
        req = pb.StreamChatCompletionRequest(
            messages=[message],
            continue_final_message=not self.chat_template,
            temperature=0.0,
            max_tokens=max_tokens,
            stop=stop,
            repeat_penalty=repeat_penalty,
            response_format=fmt,
        )
        return await self._timed(self.chat.StreamChatCompletion(req))

    async def ensure_persona(self, npc: Npc) -> None:
        if npc.id in self._personas:
            return
        persona = pb.Persona(
            id=npc.id,
            display_name=npc.display_name,
            player_name=npc.player,
            system_prompt=npc.system_prompt,
            example_dialogue=[pb.ExampleExchange(player_line=p, npc_line=n) for p, n in npc.examples],
            default_preset="bench",
        )
        with contextlib.suppress(grpc.aio.AioRpcError):  # already there from an earlier run on the same data dir
            await self.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona))
        self._personas.add(npc.id)

    async def import_history(self, npc: Npc, conversation: str, turns: list[tuple[str, str]]) -> None:
        await self.ensure_persona(npc)
        conv = pb.Conversation(
            persona_id=npc.id,
            conversation_id=conversation,
            turns=[pb.Turn(player_line=p, npc_line=n) for p, n in turns],
        )
        await self.conv.ImportConversation(pb.ImportConversationRequest(conversation=conv))

    async def talk(
        self, npc: Npc, conversation: str, turns: list[tuple[str, str]], line: str, max_tokens: int
    ) -> Result:
        """The real NPC path: the server holds the history; only the new line is sent."""
        await self.ensure_persona(npc)
        req = pb.TalkRequest(
            persona_id=npc.id, conversation_id=conversation, text=line, temperature=0.0, max_tokens=max_tokens
        )
        return await self._timed(self.conv.Talk(req))


# ------------------------------------------------------------------------------------------- OpenAI over HTTP


class _OpenAIHttp(Peer):
    """A server with an OpenAI-style streaming /v1/completions (or chat for our door)."""

    base_url = ""

    async def start(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(600.0))

    async def stop(self) -> None:
        await self.client.aclose()

    def body(
        self, text: str, max_tokens: int, stop: list[str], json_schema: dict[str, Any] | None, rp: float
    ) -> dict[str, Any]:
        raise NotImplementedError

    path = "/v1/completions"

    async def complete(
        self, text: str, max_tokens: int, stop: list[str], *, json_schema: dict[str, Any] | None = None,
        repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        if self.chat_template:
            message = {"role": "user", "content": text}
            return await self.chat_complete(
                [message], max_tokens, stop, json_schema=json_schema, repeat_penalty=repeat_penalty
            )
        return await self._stream(self.path, self.body(text, max_tokens, stop, json_schema, repeat_penalty))

    async def chat_complete(
        self, messages: list[dict[str, str]], max_tokens: int, stop: list[str], *,
        json_schema: dict[str, Any] | None = None, repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        body = self.body("", max_tokens, stop, json_schema, repeat_penalty)
        body.pop("prompt", None)
        body.pop("continue_final_message", None)
        body["messages"] = messages
        if "json_schema" in body:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": body.pop("json_schema")}}
        return await self._stream("/v1/chat/completions", body)

    async def _stream(self, path: str, body: dict[str, Any]) -> Result:
        t0 = time.perf_counter()
        first = last = 0.0
        parts: list[str] = []
        chunks = 0
        usage_tokens = -1
        cached = -1
        async with self.client.stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"{self.name}: HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                piece = _piece(obj)
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    parts.append(piece)
                    chunks += 1
                usage = obj.get("usage") or {}
                if usage.get("completion_tokens"):
                    usage_tokens = int(usage["completion_tokens"])
                timings = obj.get("timings") or {}
                if "cache_n" in timings:
                    cached = int(timings["cache_n"])
        end = time.perf_counter()
        first = first or end
        tokens = usage_tokens if usage_tokens >= 0 else chunks
        return Result(first - t0, end - t0, tokens, "".join(parts), cached, first, last or end)


def _piece(obj: dict[str, Any]) -> str:
    choices = obj.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    if "text" in c:
        return str(c.get("text") or "")
    delta = c.get("delta") or {}
    return str(delta.get("content") or "")


class NpcHttp(_OpenAIHttp):
    path = "/v1/chat/completions"

    def __init__(self, server: NpcServer) -> None:
        self.server = server
        self.name = "npc-http (batched)"

    async def start(self) -> None:
        self.base_url = self.server.http_url
        await super().start()

    def body(
        self, text: str, max_tokens: int, stop: list[str], json_schema: dict[str, Any] | None, rp: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": "assistant", "content": text}],
            "continue_final_message": True,
            "temperature": 0.0,
            "max_tokens": max_tokens,
            "stop": stop,
            "repeat_penalty": rp,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": json_schema}}
        return body


class _ServedProcess(_OpenAIHttp):
    """An OpenAI-style HTTP peer that runs as a subprocess: started, polled at ``ready_path`` until it answers."""

    process: _Process
    ready_path = "/v1/models"

    async def start(self) -> None:
        self.process.start()
        await super().start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            self.process.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                r = await self.client.get(self.ready_path)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"{self.name} did not get ready:\n" + "".join(self.process.log[-40:]))

    async def stop(self) -> None:
        await super().stop()
        self.process.stop()


class LlamaServer(_ServedProcess):
    """Native llama-server with ``-np`` slots, continuous batching and its prompt cache."""

    ready_path = "/health"

    def __init__(self, binary: Path, model: Path, threads: int, ctx_per_slot: int, slots: int, omp: str) -> None:
        self.port = free_port()
        self.name = f"llama-server -np {slots}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [
            str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-np", str(slots),
            "-c", str(ctx_per_slot * slots), "--host", "127.0.0.1", "--port", str(self.port), "--no-webui",
        ]  # fmt: skip
        self.process = _Process(cmd, bench_env(omp), self.name)

    async def start(self) -> None:
        if self.chat_template and "--jinja" not in self.process.cmd:
            self.process.cmd.append("--jinja")  # render chat requests with the GGUF's own template
        await super().start()

    def body(
        self, text: str, max_tokens: int, stop: list[str], json_schema: dict[str, Any] | None, rp: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": stop,
            "repeat_penalty": rp,
            "repeat_last_n": 64,
            "stream": True,
            "stream_options": {"include_usage": True},
            "cache_prompt": True,
        }
        if json_schema is not None:
            body["json_schema"] = json_schema
        return body


class LlamaCppServer(_ServedProcess):
    """``python -m llama_cpp.server``: llama-cpp-python's OpenAI server (one sequence, behind a lock)."""

    concurrent = True

    def __init__(self, model: Path, threads: int, ctx: int, omp: str) -> None:
        self.port = free_port()
        self.name = "llama_cpp.server"
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--n_ctx", str(ctx), "--host", "127.0.0.1", "--port", str(self.port),
            "--interrupt_requests", "False",  # serve concurrent requests one after another instead of cutting them off
        ]  # fmt: skip
        self.process = _Process(cmd, bench_env(omp), self.name)

    def body(
        self, text: str, max_tokens: int, stop: list[str], json_schema: dict[str, Any] | None, rp: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": stop,
            "repeat_penalty": rp,
            "stream": True,
        }
        if json_schema is not None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            body["grammar"] = json_schema_to_gbnf(json.dumps(json_schema))
        return body


# ---------------------------------------------------------------------------------------- llama-cpp-python direct


class LlamaCppDirect(Peer):
    """llama-cpp-python's ``Llama`` in this process, streaming from a worker thread (one generation at a time)."""

    name = "llama-cpp-python"
    concurrent = False

    def __init__(self, model: Path, threads: int, ctx: int) -> None:
        self.model = model
        self.threads = threads
        self.ctx = ctx
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        from llama_cpp import Llama

        self.llm = await asyncio.to_thread(
            Llama, model_path=str(self.model), n_threads=self.threads, n_threads_batch=self.threads, n_ctx=self.ctx,
            verbose=False,
        )  # fmt: skip

    async def stop(self) -> None:
        self.llm.close()

    async def complete(
        self, text: str, max_tokens: int, stop: list[str], *, json_schema: dict[str, Any] | None = None,
        repeat_penalty: float = 1.0,
    ) -> Result:  # fmt: skip
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = LlamaGrammar.from_json_schema(json.dumps(json_schema), verbose=False) if json_schema else None
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()

        def run() -> None:
            try:
                it: Iterator[Any] = self.llm.create_completion(  # type: ignore[assignment]
                    text, max_tokens=max_tokens, temperature=0.0, repeat_penalty=repeat_penalty, stop=stop,
                    stream=True, grammar=grammar,
                )  # fmt: skip
                for chunk in it:
                    loop.call_soon_threadsafe(q.put_nowait, (time.perf_counter(), chunk["choices"][0]["text"]))
            finally:
                loop.call_soon_threadsafe(q.put_nowait, None)

        async with self.lock:
            t0 = time.perf_counter()
            task = asyncio.create_task(asyncio.to_thread(run))
            first = last = 0.0
            parts: list[str] = []
            tokens = 0
            while (item := await q.get()) is not None:
                ts, piece = item
                tokens += 1
                if piece:
                    first = first or ts
                    last = ts
                    parts.append(piece)
            await task
            end = time.perf_counter()
        first = first or end
        return Result(first - t0, end - t0, tokens, "".join(parts), -1, first, last or end)


def canonical(text_body: str) -> str:
    """The exact text a ``continue_final_message`` chat request renders to, for the peers that take raw text."""
    return f"{ASSISTANT_NAME}: {text_body}"
