"""The NPC REST routes' JSON: the API's protobuf messages in canonical proto-JSON (google.protobuf.json_format).

This is the mapping grpc-gateway uses, so a REST body and a gRPC message cannot drift apart: field names exactly as
in the proto (snake_case), enums by name (``"FINISH_REASON_STOP"``), 64-bit integers as decimal strings
(``"create_time_ms": "1700000000000"``; numbers are accepted too), and every field printed, defaults included.
Unknown fields are rejected with a 400 that names them.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.errors import InvalidArgument

M = TypeVar("M", bound=Message)

_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)" at "([^"]+)"')
#: Where a value failed to parse: "... at Persona.max_tokens" or "... at Conversation.turns[0].player_line".
_AT_FIELD = re.compile(r" at [A-Z]\w*\.([\w.\[\]]+?)\.*$")
_PARSING_FIELD = re.compile(r"Failed to parse (\w+) field")


def to_json(message: Message) -> dict[str, Any]:
    """A message as proto-JSON, keyed by proto field names, with every field present."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def from_json(data: dict[str, Any], message: M) -> M:
    """Parses proto-JSON into ``message``; a body that does not fit is InvalidArgument naming the field."""
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        text = str(exc).split("\n")[0]
        unknown = _UNKNOWN_FIELD.search(text)
        if unknown is None:
            at = _AT_FIELD.search(text)
            parsing = _PARSING_FIELD.findall(text)
            param = at.group(1) if at else parsing[-1] if parsing else "body"
            raise InvalidArgument(f"the body is not a valid {message.DESCRIPTOR.name}: {text}", param=param) from exc
        type_name, field, where = unknown.groups()
        descriptor = message.DESCRIPTOR.file.pool.FindMessageTypeByName(type_name)
        hint = ""
        if field in pb.SamplingOptions.DESCRIPTOR.fields_by_name and "sampling" in descriptor.fields_by_name:
            hint = f'; sampling options go under "sampling": {{"{field}": ...}}'
        fields = ", ".join(f.name for f in descriptor.fields)
        label = where if where == descriptor.name else f"{where} ({descriptor.name})"
        raise InvalidArgument(f"{label} has no field {field!r}{hint}; its fields are: {fields}", param=field) from exc
