"""Every NpcService operation's role and scope rule, over a scripted engine: the rules each door gets for free.

The live test (test_security_live.py) shows the doors carry credentials to these rules; this one shows the whole
table, operation by operation and role by role.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from npcserver.client import mint_player_token
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import ChatRequest, Conversation, Message, TalkRequest
from npcserver.errors import PermissionDenied, Unauthenticated
from npcserver.service import Gate, Health, NpcService, final_of
from npcserver.service.access import Role
from npcserver.service.auth import ApiKey, TokenVerifier, hash_key
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]
SECRET = b"k" * 48
KEYS = [ApiKey(f"{role}-key", role, hash_key(f"{role}-secret")) for role in Role]
# Minted when the module is collected, and a full run reaches these tests many minutes later: it lives an hour.
TOKEN = mint_player_token(SECRET, "p1", "p1/", personas=["tavern_keeper"], ttl=3600)
CREDENTIALS = {
    "player token": f"Bearer {TOKEN}",
    "player key": "Bearer player-secret",
    "designer key": "Bearer designer-secret",
    "admin key": "Bearer admin-secret",
}
ROLE_OF = {"player token": Role.PLAYER, "player key": Role.PLAYER, "designer key": Role.DESIGNER}

Operation = Callable[[NpcService], Awaitable[Any]]


async def _persona_copy(service: NpcService, new_id: str) -> Any:
    return dataclasses.replace(await service.core.get_persona("tavern_keeper"), id=new_id)


async def _stored_conversation(service: NpcService) -> Conversation:
    return await service.core.get_conversation("tavern_keeper", "p1/a")


async def _async(value: Any) -> Any:
    return value


#: Each operation with the least role that may run it, called in the token's own scope (its prefix, its persona).
OPERATIONS: dict[str, tuple[Role, Operation]] = {
    "talk": (Role.PLAYER, lambda s: s.talk(TalkRequest("tavern_keeper", "p1/a", "Hello?"))),
    "stream talk": (Role.PLAYER, lambda s: final_of(s.stream_talk(TalkRequest("tavern_keeper", "p1/a", "Hi")))),
    "read a conversation": (Role.PLAYER, lambda s: s.get_conversation("tavern_keeper", "p1/a")),
    "read a persona": (Role.PLAYER, lambda s: s.get_persona("tavern_keeper")),
    "list personas": (Role.PLAYER, lambda s: s.list_personas()),
    "list presets": (Role.PLAYER, lambda s: _async(s.list_presets())),
    "list models": (Role.PLAYER, lambda s: _async(s.list_models())),
    "chat completion": (Role.DESIGNER, lambda s: s.chat(ChatRequest((Message("user", "Hi"),)))),
    "load the model": (Role.DESIGNER, lambda s: s.load_model()),
    "create a persona": (Role.DESIGNER, lambda s: _chain(_persona_copy(s, "new_npc"), s.create_persona)),
    "update a persona": (Role.DESIGNER, lambda s: _chain(_persona_copy(s, "api_npc"), s.update_persona)),
    "reset a conversation": (Role.ADMIN, lambda s: s.reset_conversation("tavern_keeper", "p1/a")),
    "import a conversation": (Role.ADMIN, lambda s: _chain(_stored_conversation(s), s.import_conversation)),
    "delete a persona": (Role.ADMIN, lambda s: s.delete_persona("api_npc")),
}


async def _chain(first: Awaitable[Any], then: Callable[[Any], Awaitable[Any]]) -> Any:
    return await then(await first)


async def secured_service(tmp_path: Path) -> NpcService:
    core = NpcCore(FakeEngine("Two silver."), SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    return NpcService(core, Gate(KEYS, tokens=TokenVerifier(SECRET)))


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("credential", list(CREDENTIALS))
async def test_each_operation_needs_its_role(tmp_path: Path, operation: str, credential: str) -> None:
    service = await secured_service(tmp_path)
    service.admit(CREDENTIALS["admin key"])
    # Something to read, reset, import, update and delete (persona files are edited as files, not over the API).
    await service.talk(TalkRequest("tavern_keeper", "p1/a", "First."))
    await service.create_persona(await _persona_copy(service, "api_npc"))
    needed, run = OPERATIONS[operation]
    caller = service.admit(CREDENTIALS[credential])
    if ROLE_OF.get(credential, Role.ADMIN) >= needed:
        await run(service)
        return
    with pytest.raises(
        PermissionDenied, match=f"needs the {needed} role; this request came with the {caller.role}"
    ) as err:
        await run(service)
    assert err.value.code == "insufficient_role" and caller.role < needed


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda s: s.talk(TalkRequest("tavern_keeper", "p2/a", "Hi")), "starting with 'p1/', not 'p2/a'"),
        (lambda s: s.talk(TalkRequest("tavern_keeper", "p1", "Hi")), "starting with 'p1/', not 'p1'"),
        (lambda s: s.get_conversation("tavern_keeper", "p10/a"), "starting with 'p1/', not 'p10/a'"),
        (lambda s: s.talk(TalkRequest("narrator", "p1/a", "Hi")), "only the personas tavern_keeper, not 'narrator'"),
        (lambda s: s.get_persona("ship_ai"), "only the personas tavern_keeper, not 'ship_ai'"),
    ],
)
async def test_a_token_stays_in_its_conversations_and_personas(
    tmp_path: Path, operation: Operation, message: str
) -> None:
    service = await secured_service(tmp_path)
    service.admit(CREDENTIALS["player token"])
    with pytest.raises(PermissionDenied, match=f"player token 'p1'.*{message}"):
        await operation(service)


async def test_a_token_lists_only_its_personas_and_a_player_key_talks_anywhere(tmp_path: Path) -> None:
    service = await secured_service(tmp_path)
    service.admit(CREDENTIALS["player token"])
    assert [p.id for p in (await service.list_personas())[0]] == ["tavern_keeper"]
    service.admit(CREDENTIALS["player key"])
    assert len((await service.list_personas())[0]) == 3
    assert (await service.talk(TalkRequest("narrator", "anyone", "Hi"))).stored


async def test_without_admission_a_secured_service_refuses_and_an_open_one_serves(tmp_path: Path) -> None:
    secured = await secured_service(tmp_path)

    async def talk_unadmitted(service: NpcService) -> Any:
        return await service.talk(TalkRequest("tavern_keeper", "c", "Hi"))

    # A fresh context: what a door that forgot admit() would run in.
    fresh = contextvars.Context()
    with pytest.raises(Unauthenticated, match="this call was not admitted"):
        await asyncio.create_task(talk_unadmitted(secured), context=fresh)
    assert contextvars.Context().run(secured.health) == Health(ready=True)  # public: the status alone
    core = NpcCore(FakeEngine(), SqliteStore(tmp_path / "open.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    open_service = NpcService(core)
    completion = await asyncio.create_task(talk_unadmitted(open_service), context=contextvars.Context())
    assert completion.stored
    assert open_service.health().model == "fake"
