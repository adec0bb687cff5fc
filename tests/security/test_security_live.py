"""Roles, player tokens and TLS on the real server: one process with a keys file, a token secret and a certificate
from a throwaway CA (trustme), reached over gRPC with TLS, and gRPC-Web, REST, OpenAI and Ollama over HTTPS.

The whole rule table is in test_access_rules.py; here each door shows that it carries credentials to those rules
and answers with its own status (gRPC PERMISSION_DENIED / UNAUTHENTICATED, HTTP 403 / 401).
"""

from __future__ import annotations

import json
import secrets
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import grpc
import httpx
import jwt
import openai
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.client import mint_player_token
from npcserver.service.auth import hash_key
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.model

SECRET = secrets.token_urlsafe(48)
KEYS = {role: f"{role}-{secrets.token_urlsafe(16)}" for role in ("player", "designer", "admin")}
ENV_ADMIN_KEY = "env-admin-" + secrets.token_hex(8)
SERVICE = "/npcserver.api.v1."
PERMISSION_DENIED, UNAUTHENTICATED = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def token(player: str = "p1", ttl: float = 300, **kw: Any) -> str:
    return mint_player_token(SECRET, player, f"{player}:", personas=["tavern_keeper"], ttl=ttl, **kw)


@dataclass
class Secured:
    server: ServerProcess
    ca: trustme.CA

    @property
    def url(self) -> str:
        return self.server.http_url

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def http(self, credential: str | None = None) -> httpx.Client:
        headers = bearer(credential) if credential else {}
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=120)

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca.cert_pem.bytes())
        return grpc.secure_channel(self.server.grpc_target, credentials)

    def web(self, method: str, request: Any, credential: str | None = None) -> tuple[int, str, list[bytes]]:
        """One gRPC-Web call over HTTPS: (grpc-status, grpc-message, message payloads)."""
        headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
        payload = request.SerializeToString()
        body = struct.pack(">BI", 0, len(payload)) + payload
        with self.http(credential) as client:
            reply = client.post(SERVICE + method, content=body, headers=headers)
        assert reply.status_code == 200, reply.text
        messages, status, message, data = (
            [],
            reply.headers.get("grpc-status"),
            reply.headers.get("grpc-message"),
            reply.content,
        )
        while data:
            flag, length = struct.unpack(">BI", data[:5])
            chunk, data = data[5 : 5 + length], data[5 + length :]
            if flag & 0x80:
                trailers = dict(row.split(":", 1) for row in chunk.decode().split("\r\n") if row)
                status, message = trailers["grpc-status"].strip(), trailers.get("grpc-message", "").strip()
            else:
                messages.append(chunk)
        assert status is not None
        return int(status), unquote(message or ""), messages


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    (folder / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    keys = "".join(
        f'[[keys]]\nname = "{role}-key"\nrole = "{role}"\nhash = "{hash_key(key)}"\n' for role, key in KEYS.items()
    )
    (folder / "keys.toml").write_text(keys, encoding="utf-8")
    (folder / "token-secret").write_text(SECRET + "\n", encoding="utf-8")
    server = start_server(
        folder / "data",
        NPCSERVER_API_KEYS_FILE=str(folder / "keys.toml"),
        NPCSERVER_API_KEY=ENV_ADMIN_KEY,
        NPCSERVER_PLAYER_TOKEN_SECRET_FILE=str(folder / "token-secret"),
        NPCSERVER_TLS_CERT_FILE=str(folder / "cert.pem"),
        NPCSERVER_TLS_KEY_FILE=str(folder / "key.pem"),
        NPCSERVER_MAX_QUEUE="64",
    )
    yield Secured(server, ca)
    server.stop()


def grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def talk_request(conversation: str, persona: str = "tavern_keeper") -> pb.TalkRequest:
    return pb.TalkRequest(
        persona_id=persona, conversation_id=conversation, text="Hello?", sampling=pb.SamplingOptions(max_tokens=4)
    )


# ---------------------------------------------------------------------------------------------------------------
# gRPC with TLS
# ---------------------------------------------------------------------------------------------------------------


def test_grpc_over_tls_a_player_token_talks_only_in_its_own_conversations(secured: Secured) -> None:
    channel = secured.channel()
    conversations = pb_grpc.ConversationServiceStub(channel)
    personas = pb_grpc.PersonaServiceStub(channel)
    mine = bearer(token()).items()

    replies = list(conversations.Talk(talk_request("p1:save-1"), metadata=tuple(mine)))
    assert replies[-1].HasField("final")
    got = conversations.GetConversation(
        pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="p1:save-1"), metadata=tuple(mine)
    )
    assert [t.player_line for t in got.conversation.turns] == ["Hello?"]

    refusals = {
        "another's conversation": lambda: list(conversations.Talk(talk_request("p2:save-1"), metadata=tuple(mine))),
        "another persona": lambda: list(conversations.Talk(talk_request("p1:x", "narrator"), metadata=tuple(mine))),
        "reading another's": lambda: conversations.GetConversation(
            pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="p2:save-1"), metadata=tuple(mine)
        ),
        "reset": lambda: conversations.ResetConversation(
            pb.ResetConversationRequest(persona_id="tavern_keeper", conversation_id="p1:save-1"), metadata=tuple(mine)
        ),
        "import": lambda: conversations.ImportConversation(
            pb.ImportConversationRequest(conversation=got.conversation), metadata=tuple(mine)
        ),
        "persona edit": lambda: personas.UpdatePersona(
            pb.UpdatePersonaRequest(
                persona=pb.Persona(id="p1_npc", display_name="X", system_prompt="Y"), allow_missing=True
            ),
            metadata=tuple(mine),
        ),
        "persona delete": lambda: personas.DeletePersona(
            pb.DeletePersonaRequest(persona_id="narrator"), metadata=tuple(mine)
        ),
        "chat completion": lambda: pb_grpc.ChatServiceStub(channel).CreateChatCompletion(
            pb.CreateChatCompletionRequest(messages=[pb.ChatMessage(role="user", content="hi")]), metadata=tuple(mine)
        ),
    }
    for what, call in refusals.items():
        err = grpc_error(call)
        assert err.code() == PERMISSION_DENIED, (what, err.details())
        assert "player token 'p1'" in err.details(), what
    assert "starting with 'p1:', not 'p2:save-1'" in grpc_error(refusals["another's conversation"]).details()
    channel.close()


def test_grpc_refuses_missing_expired_and_tampered_credentials(secured: Secured) -> None:
    channel = secured.channel()
    presets = pb_grpc.PresetServiceStub(channel)
    expired = jwt.encode(
        {"sub": "p1", "aud": "npcserver", "exp": int(time.time()) - 60, "conversation_prefix": "p1:"}, SECRET, "HS256"
    )
    header, payload, signature = token().split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["conversation_prefix"] = ""  # a modified client widening its own scope
    tampered = f"{header}.{jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()}.{signature}"
    for credential, message in [
        (None, "this server needs a credential"),
        ("wrong-key", "the API key is wrong"),
        (expired, "the player token has expired"),
        (tampered, "signature does not verify"),
    ]:
        metadata = tuple(bearer(credential).items()) if credential else ()
        err = grpc_error(lambda m=metadata: presets.ListPresets(pb.ListPresetsRequest(), metadata=m))
        assert (err.code(), message in err.details()) == (UNAUTHENTICATED, True), err.details()
    assert presets.ListPresets(pb.ListPresetsRequest(), metadata=tuple(bearer(KEYS["player"]).items())).presets
    channel.close()


def test_grpc_health_is_public_and_reflection_needs_a_credential(secured: Secured) -> None:
    channel = secured.channel()
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    list_services = [reflection_pb2.ServerReflectionRequest(list_services="")]
    err = grpc_error(lambda: list(reflection.ServerReflectionInfo(iter(list_services))))
    assert err.code() == UNAUTHENTICATED and "needs a credential" in err.details()
    [reply] = list(reflection.ServerReflectionInfo(iter(list_services), metadata=tuple(bearer(token()).items())))
    assert "npcserver.api.v1.ConversationService" in {s.name for s in reply.list_services_response.service}
    channel.close()


def test_grpc_roles_a_designer_edits_personas_a_player_key_cannot_an_admin_deletes(secured: Secured) -> None:
    channel = secured.channel()
    personas = pb_grpc.PersonaServiceStub(channel)
    conversations = pb_grpc.ConversationServiceStub(channel)
    persona = pb.Persona(id="smith", display_name="Bram", system_prompt="You are Bram, a smith.")
    err = grpc_error(
        lambda: personas.CreatePersona(
            pb.CreatePersonaRequest(persona=persona), metadata=tuple(bearer(KEYS["player"]).items())
        )
    )
    assert err.code() == PERMISSION_DENIED and "needs the designer role" in err.details()
    designer = tuple(bearer(KEYS["designer"]).items())
    personas.CreatePersona(pb.CreatePersonaRequest(persona=persona), metadata=designer)
    persona.display_name = "Bram the Smith"
    updated = personas.UpdatePersona(pb.UpdatePersonaRequest(persona=persona), metadata=designer)
    assert updated.persona.display_name == "Bram the Smith"
    # A player key is not bound to a prefix: it talks in any conversation (tokens are what binds players).
    player_key = tuple(bearer(KEYS["player"]).items())
    assert list(conversations.Talk(talk_request("anyone", "smith"), metadata=player_key))[-1].HasField("final")
    reset = pb.ResetConversationRequest(persona_id="smith", conversation_id="anyone")
    assert grpc_error(lambda: conversations.ResetConversation(reset, metadata=designer)).code() == PERMISSION_DENIED
    admin = tuple(bearer(ENV_ADMIN_KEY).items())  # the plain key from NPCSERVER_API_KEY is an admin
    # A reply that came out empty is not stored, so count what the Talk stored rather than assume one turn.
    stored = conversations.GetConversation(
        pb.GetConversationRequest(persona_id="smith", conversation_id="anyone"), metadata=admin
    ).conversation.turns
    assert conversations.ResetConversation(reset, metadata=admin).deleted_turns == len(stored)
    assert personas.DeletePersona(
        pb.DeletePersonaRequest(persona_id="smith"), metadata=tuple(bearer(KEYS["admin"]).items())
    )
    channel.close()


def test_the_grpc_port_speaks_only_tls(secured: Secured) -> None:
    plain = grpc.insecure_channel(secured.server.grpc_target)
    err = grpc_error(lambda: pb_grpc.PresetServiceStub(plain).ListPresets(pb.ListPresetsRequest(), timeout=10))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    plain.close()


# ---------------------------------------------------------------------------------------------------------------
# gRPC-Web over HTTPS
# ---------------------------------------------------------------------------------------------------------------


def test_grpc_web_over_https_a_player_token_talks_only_in_its_own_conversations(secured: Secured) -> None:
    mine = token("p3")
    status, message, replies = secured.web("ConversationService/Talk", talk_request("p3:slot"), mine)
    assert status == 0, message
    assert pb.TalkResponse.FromString(replies[-1]).HasField("final")
    status, message, _ = secured.web("ConversationService/Talk", talk_request("p1:slot"), mine)
    assert status == PERMISSION_DENIED.value[0] and "starting with 'p3:'" in message
    update = pb.UpdatePersonaRequest(
        persona=pb.Persona(id="x", display_name="X", system_prompt="Y"), allow_missing=True
    )
    status, message, _ = secured.web("PersonaService/UpdatePersona", update, mine)
    assert status == PERMISSION_DENIED.value[0] and "needs the designer role" in message
    reset = pb.ResetConversationRequest(persona_id="tavern_keeper", conversation_id="p3:slot")
    assert secured.web("ConversationService/ResetConversation", reset, mine)[0] == PERMISSION_DENIED.value[0]
    assert secured.web("PresetService/ListPresets", pb.ListPresetsRequest())[0] == UNAUTHENTICATED.value[0]


# ---------------------------------------------------------------------------------------------------------------
# REST, OpenAI and Ollama over HTTPS
# ---------------------------------------------------------------------------------------------------------------


def test_rest_over_https_a_player_token_talks_only_in_its_own_conversations(secured: Secured) -> None:
    assert urlparse(secured.url).scheme == "https"
    with secured.http(token("p4")) as client:
        talk = client.post("/v1/npcs/tavern_keeper/conversations/p4:a:talk",
                           json={"text": "Hello?", "stream": False, "sampling": {"max_tokens": 4}})  # fmt: skip
        assert talk.status_code == 200 and talk.json()["stored"] is True, talk.text
        assert client.get("/v1/npcs/tavern_keeper/conversations/p4:a").json()["turns"]
        other = client.get("/v1/npcs/tavern_keeper/conversations/p1:save-1")
        assert other.status_code == 403 and other.json()["error"]["code"] == "conversation_out_of_scope"
        assert "starting with 'p4:'" in other.json()["error"]["message"]
        persona = {"id": "x", "display_name": "X", "system_prompt": "Y"}
        denied = {
            "persona edit": client.put("/v1/npcs/x", json=persona),
            "persona create": client.post("/v1/npcs", json=persona),
            "persona delete": client.delete("/v1/npcs/narrator"),
            "import": client.put("/v1/npcs/tavern_keeper/conversations/p4:a", json={"turns": []}),
            "reset": client.delete("/v1/npcs/tavern_keeper/conversations/p4:a"),
            "other persona": client.get("/v1/npcs/narrator"),
        }
        assert {what: r.status_code for what, r in denied.items()} == dict.fromkeys(denied, 403)
        assert denied["persona edit"].json()["error"]["type"] == "permission_error"


def test_rest_refuses_missing_and_expired_credentials_and_health_says_only_its_status(secured: Secured) -> None:
    with secured.http() as anonymous:
        missing = anonymous.get("/v1/presets")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_key"
        assert anonymous.get("/healthz").json() == {"status": "ok"}
    with secured.http(KEYS["player"]) as keyed:
        assert keyed.get("/healthz").json()["model"]
    expired = jwt.encode(
        {"sub": "p1", "aud": "npcserver", "exp": int(time.time()) - 60, "conversation_prefix": "p1:"}, SECRET, "HS256"
    )
    with secured.http(expired) as client:
        reply = client.get("/v1/presets")
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "token_expired"


def test_openai_client_over_https_with_the_ca_bundle(secured: Secured) -> None:
    def client(key: str) -> openai.OpenAI:
        http = httpx.Client(verify=secured.ssl_context(), timeout=120)
        # openai types http_client as an httpx2 client; it still takes an httpx one, as the README shows.
        return openai.OpenAI(base_url=f"{secured.url}/v1", api_key=key, max_retries=0, http_client=http)  # type: ignore[arg-type]

    model = client(token()).models.list().data[0].id  # a player may read the model list
    messages: Any = [{"role": "user", "content": "Name a sword."}]
    reply = client(KEYS["designer"]).chat.completions.create(model=model, messages=messages, max_tokens=4)
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.PermissionDeniedError, match="chat completion"):
        client(token()).chat.completions.create(model=model, messages=messages, max_tokens=4)
    with pytest.raises(openai.AuthenticationError):
        client("wrong").models.list()


def test_ollama_door_over_https_follows_the_same_rules(secured: Secured) -> None:
    with secured.http() as anonymous:
        assert anonymous.get("/api/tags").status_code == 401
    with secured.http(token()) as player:
        model = player.get("/api/tags").json()["models"][0]["name"]
        chat = player.post("/api/chat", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 403 and "needs the designer role" in chat.json()["error"]
