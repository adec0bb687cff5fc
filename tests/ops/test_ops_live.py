"""Rate limits, metrics and the request log on the real server, model and sockets (two server starts in all)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess
from tests.http.grpcweb_wire import call as grpc_web_call

SECRET_LINE = "My secret phrase is zebra-quartz-42, barkeep."


def _log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """The server's JSON log records (every line it wrote but the ready line)."""
    records = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _request_line(server: ServerProcess, request_id: str) -> dict[str, Any]:
    matches = [r for r in _log_lines(server) if r.get("request_id") == request_id]
    assert len(matches) == 1, f"expected one request line for {request_id}, got {matches}"
    return matches[0]


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A scrape as {sample name: [(labels, value), ...]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


def _talk_grpc(
    stub: Any, conversation: str, text: str, max_tokens: int = 8, metadata: tuple[tuple[str, str], ...] = ()
) -> list[pb.TalkResponse]:
    request = pb.TalkRequest(
        persona_id="tavern_keeper",
        conversation_id=conversation,
        text=text,
        sampling=pb.SamplingOptions(max_tokens=max_tokens, temperature=0.0),
    )
    return list(stub.Talk(request, metadata=metadata, timeout=120))


def test_metrics_and_the_json_request_log(server_factory: Any) -> None:
    server = server_factory(NPCSERVER_LOG_FORMAT="json")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        first = _talk_grpc(stub, "ops-1", SECRET_LINE)
        _talk_grpc(stub, "ops-1", "And another thing?")  # the same conversation: its KV is reused
    with httpx.Client(base_url=server.http_url, timeout=120) as http:
        rest = http.post(
            "/v1/npcs/tavern_keeper/conversations/ops-2:talk",
            json={"text": "Hello there.", "sampling": {"max_tokens": 6, "temperature": 0}, "stream": False},
        )
        assert rest.status_code == 200, rest.text
        chunk_ids, models = set(), set()
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as sse:
            for sse_line in sse.iter_lines():
                if sse_line.startswith("data: {"):
                    chunk = json.loads(sse_line[6:])
                    chunk_ids.add(chunk["id"])
                    models.add(chunk["model"])
        scrape = http.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    m = _samples(scrape.text)
    [model] = models
    assert _total(m, "npcserver:time_to_first_token_seconds_count", model_name=model) >= 3
    assert _total(m, "npcserver:time_to_first_token_seconds_sum") > 0
    assert _total(m, "npcserver:inter_token_latency_seconds_count") > 0
    assert _total(m, "npcserver:generation_tokens_total") > 0
    assert _total(m, "npcserver:prompt_tokens_total") > 0
    # The second turn of ops-1 found its prompt in the KV cache.
    assert _total(m, "npcserver:prefix_cache_hits_total") > 0
    assert _total(m, "npcserver:prefix_cache_queries_total") >= _total(m, "npcserver:prefix_cache_hits_total")
    assert _total(m, "npcserver:engine_step_duration_seconds_count") > 0
    assert _total(m, "npcserver:kv_cache_usage_perc") > 0
    assert "npcserver:num_requests_running" in m and "npcserver:num_requests_waiting" in m
    assert "npcserver:kv_cache_evictions_total" in m
    assert _total(m, "npcserver:requests_total", door="grpc", method="Talk", status="OK") == 2
    route = "POST /v1/npcs/{persona_id}/conversations/{conversation_id}:talk"
    assert _total(m, "npcserver:requests_total", door="rest", method=route, status="200") == 1
    assert _total(m, "npcserver:request_success_total") == 4  # two gRPC Talks, a REST Talk, a chat completion

    talks = [r for r in _log_lines(server) if r.get("door") == "grpc" and r.get("conversation") == "ops-1"]
    assert len(talks) == 2 and len({r["request_id"] for r in talks}) == 2
    line = talks[0]
    # Every message of the stream carried the id the request's line is logged under (a bug report's id finds it).
    assert {m.id for m in first} == {line["request_id"]} and line["request_id"].startswith("talk-")
    assert line["door"] == "grpc" and line["method"] == "Talk" and line["status"] == "OK"
    assert line["persona"] == "tavern_keeper" and line["conversation"] == "ops-1"
    assert line["model"] == model and line["logger"] == "npcserver.requests" and line["level"] == "INFO"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0
    assert line["ttft_ms"] > 0 and line["duration_ms"] >= line["ttft_ms"] and "queue_ms" in line
    assert line["caller"].startswith("addr:") and line["client"]
    [rest_line] = [r for r in _log_lines(server) if r.get("door") == "rest" and r.get("method") == route]
    assert rest_line["status"] == "200" and rest_line["conversation"] == "ops-2"
    assert rest_line["request_id"].startswith("talk-") and "completion_tokens" in rest_line
    # The id every streamed chunk carried finds the request's line.
    [chat_id] = chunk_ids
    chat_line = _request_line(server, chat_id)
    assert chat_line["door"] == "rest" and chat_line["method"] == "POST /v1/chat/completions"
    assert chat_line["status"] == "200" and chat_line["prompt_tokens"] > 0 and "completion_tokens" in chat_line
    # Never the player's text at INFO, anywhere in the log.
    assert "zebra-quartz" not in server.output()


def _refused_with_retry_hint_on_every_door(server: ServerProcess) -> None:
    """The requests-per-minute limit (3) refuses the fourth request of one caller on each door, with a hint."""
    host, port = urlsplit(server.http_url).hostname or "", urlsplit(server.http_url).port or 0
    with grpc.insecure_channel(server.grpc_target) as channel:
        presets = pb_grpc.PresetServiceStub(channel)
        metadata = (("authorization", "Bearer grpc-caller"),)
        for _ in range(3):
            presets.ListPresets(pb.ListPresetsRequest(), metadata=metadata)
        with pytest.raises(grpc.RpcError) as refused:
            presets.ListPresets(pb.ListPresetsRequest(), metadata=metadata)
    err: Any = refused.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 requests per minute" in err.details() and "retry in" in err.details()
    retry = dict(err.trailing_metadata())["retry-after"]
    assert 1 <= int(retry) <= 20

    with httpx.Client(base_url=server.http_url, timeout=60, headers={"authorization": "Bearer rest-caller"}) as http:
        for _ in range(3):
            assert http.get("/v1/presets").status_code == 200
        limited = http.get("/v1/presets")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    body = limited.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limited" and "retry in" in body["message"]

    web_headers = {"authorization": "Bearer web-caller"}
    path = "/npcserver.api.v1.PresetService/ListPresets"
    for _ in range(3):
        assert grpc_web_call(host, port, path, b"", headers=web_headers).status == 0
    web = grpc_web_call(host, port, path, b"", headers=web_headers)
    assert web.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert 1 <= int(web.headers["retry-after"]) <= 20


async def _fairness(server: ServerProcess) -> None:
    """One caller fires many Talks at once; another caller's Talks, sent at the same time, are all served."""

    async def talk(http: httpx.AsyncClient, who: str, i: int) -> httpx.Response:
        return await http.post(
            f"/v1/npcs/tavern_keeper/conversations/{who}-{i}:talk",
            json={"text": "Evening.", "sampling": {"max_tokens": 4, "temperature": 0}, "stream": False},
            headers={"authorization": f"Bearer {who}"},
        )

    async with httpx.AsyncClient(base_url=server.http_url, timeout=300) as http:
        hammer = [talk(http, "hammer", i) for i in range(10)]
        patient = [talk(http, "patient", i) for i in range(3)]
        results = await asyncio.gather(*hammer, *patient)
    hammered, served = results[:10], results[10:]
    assert sorted(r.status_code for r in hammered) == [200] * 3 + [429] * 7
    assert all(r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0 for r in served), [
        r.text for r in served
    ]


def test_rate_limits_refuse_with_a_retry_hint_and_one_caller_cannot_starve_another(server_factory: Any) -> None:
    server = server_factory(
        NPCSERVER_RATE_LIMIT_REQUESTS_PER_MINUTE="3",
        NPCSERVER_RATE_LIMIT_TOKENS_PER_MINUTE="1",
        NPCSERVER_LOG_FORMAT="json",
        NPCSERVER_LOG_LEVEL="DEBUG",
    )
    _refused_with_retry_hint_on_every_door(server)
    asyncio.run(_fairness(server))

    # Tokens per minute (1 here): the first reply may start and is charged afterwards; the caller's next
    # generation waits until the debt is paid off.
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        metadata = (("authorization", "Bearer chatty"),)
        first = _talk_grpc(stub, "chatty", SECRET_LINE, max_tokens=4, metadata=metadata)
        assert first[-1].final.usage.completion_tokens >= 1
        with pytest.raises(grpc.RpcError) as refused:
            _talk_grpc(stub, "chatty", "More?", metadata=metadata)
    err: Any = refused.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 tokens per minute" in err.details()
    assert int(dict(err.trailing_metadata())["retry-after"]) >= 1

    # At DEBUG the request log carries the player's line, for reproducing a bug report.
    [line] = [r for r in _log_lines(server) if r.get("conversation") == "chatty" and r.get("status") == "OK"]
    assert line["text"] == SECRET_LINE and line["caller"].startswith("cred:")
    refusals = [r for r in _log_lines(server) if r.get("status") == "RESOURCE_EXHAUSTED"]
    assert refusals and all(r["retry_after_s"] > 0 for r in refusals)
    with httpx.Client(base_url=server.http_url) as http:
        m = _samples(http.get("/metrics").text)
    assert _total(m, "npcserver:rate_limited_requests_total", limit="requests") >= 3 + 7
    assert _total(m, "npcserver:rate_limited_requests_total", limit="tokens") >= 1
