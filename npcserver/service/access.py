"""Who a caller is (``Caller``) and what each role may do: the rules every door gets from NpcService.

``NpcService.admit`` turns the door's ``authorization`` value into a Caller and makes it the caller of the current
call (a context variable, so the doors stay credential extraction only and each operation checks its own rule here,
for every door alike). An operation that runs without admission on a server with credentials is refused: a door
that forgets to admit fails closed.

Roles, each one including the one before:
- player: talk, read its own conversations, read personas, presets and models;
- designer: also create and update personas, and run chat completions (the playground: text outside any persona);
- admin: also import and reset conversations and delete personas (with every conversation they hold).

A player token is narrower than a player key: its conversation ids must start with the token's prefix, and when it
names personas it may use only those.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass

from npcserver.errors import PermissionDenied, Unauthenticated


class Role(enum.IntEnum):
    """What a credential may do; a higher role may do everything a lower one may."""

    PLAYER = 1
    DESIGNER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {name!r}: use one of {choices}") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Caller:
    """The identity a request was admitted with.

    ``name``: the key's name or the token's player (``sub``); ``via``: "key", "token", or "open" on a server with no
    credentials configured. ``conversation_prefix`` ("" allows any) and ``personas`` (None allows any) narrow a
    player token.
    """

    role: Role
    name: str
    via: str
    conversation_prefix: str = ""
    personas: frozenset[str] | None = None

    def describe(self) -> str:
        if self.via == "open":
            return "an unauthenticated caller on an open server"
        return f"{self.role} {self.via} {self.name!r}"

    def require(self, role: Role, action: str) -> None:
        """Raises PermissionDenied unless this caller's role is at least ``role``."""
        if self.role < role:
            raise PermissionDenied(
                f"{action} needs the {role} role; this request came with the {self.describe()}",
                code="insufficient_role",
            )

    def may_use_persona(self, persona_id: str) -> bool:
        return self.personas is None or persona_id in self.personas

    def require_persona(self, persona_id: str, action: str) -> None:
        """Raises PermissionDenied when a token that names its personas does not name this one."""
        if not self.may_use_persona(persona_id):
            allowed = ", ".join(sorted(self.personas or ()))
            raise PermissionDenied(
                f"{action}: the {self.describe()} may use only the personas {allowed}, not {persona_id!r}",
                param="persona_id",
                code="persona_out_of_scope",
            )

    def require_conversation(self, persona_id: str, conversation_id: str, action: str) -> None:
        """Raises PermissionDenied unless the conversation is this caller's (its prefix) and the persona allowed."""
        self.require(Role.PLAYER, action)
        self.require_persona(persona_id, action)
        if not conversation_id.startswith(self.conversation_prefix):
            raise PermissionDenied(
                f"{action}: the {self.describe()} may use only conversation ids starting with "
                f"{self.conversation_prefix!r}, not {conversation_id!r}",
                param="conversation_id",
                code="conversation_out_of_scope",
            )


#: The caller on a server with no credentials configured: anyone may do anything (the default on localhost).
OPEN = Caller(Role.ADMIN, name="", via="open")

_current: ContextVar[Caller | None] = ContextVar("npcserver_caller", default=None)


def set_current_caller(caller: Caller) -> None:
    """Makes ``caller`` the caller of the running call (its asyncio task and the tasks it starts)."""
    _current.set(caller)


def admitted_caller() -> Caller | None:
    """The caller admission set for the running call, or None when nothing was admitted."""
    return _current.get()


def current_caller(open_server: bool) -> Caller:
    """The admitted caller of the running call. Without admission: OPEN on an open server, else Unauthenticated."""
    caller = _current.get()
    if caller is not None:
        return caller
    if open_server:
        return OPEN
    raise Unauthenticated(
        "this call was not admitted: send 'authorization: Bearer <key or player token>'", code="missing_key"
    )
