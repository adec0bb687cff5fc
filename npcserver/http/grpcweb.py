"""The gRPC-Web bridge: serves every registered gRPC method over HTTP/1.1, per grpc's doc/PROTOCOL-WEB.md.

The generated ``add_XServicer_to_server(servicer, server)`` functions register their method handlers on any object
with ``add_registered_method_handlers`` / ``add_generic_rpc_handlers``; ``MethodRegistry`` is such an object, so the
very servicers of the gRPC door are driven here and a new RPC works on both doors with no code in this module.

Wire format, both ways: frames of ``flag (1 byte) | length (4 bytes, big-endian) | payload``. Flag 0x00 carries a
message, flag 0x80 the trailers as ``key:value\\r\\n`` lines. ``application/grpc-web-text`` is the same bytes in
base64, one padded base64 chunk per frame. Every response that sent a message, and every successful one, ends with a
trailer frame. An error before any message is sent "trailers-only": HTTP 200 with grpc-status in the headers and an
empty body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
import re
import struct
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote

import grpc
import grpc.aio
from starlette.types import Receive, Scope, Send

from npcserver.http.calls import BodyTooLarge, CallTracker, Outcome, read_body, run_call

log = logging.getLogger(__name__)

CONTENT_TYPE_BINARY = "application/grpc-web+proto"
CONTENT_TYPE_TEXT = "application/grpc-web-text+proto"
_MESSAGE_FLAG = 0x00
_COMPRESSED_FLAG = 0x01
_TRAILER_FLAG = 0x80
_FRAME_HEADER = struct.Struct(">BI")
#: grpc-timeout units (PROTOCOL-HTTP2.md) in seconds.
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: Request headers that are transport details, not call metadata.
_NOT_METADATA = frozenset(
    {"content-type", "content-length", "te", "host", "connection", "accept", "accept-encoding", "user-agent",
     "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "transfer-encoding", "origin", "referer"}
)  # fmt: skip
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")


def is_grpc_web(content_type: str) -> bool:
    """Whether a request's content type is gRPC-Web (binary or text, any suffix)."""
    return content_type.split(";", 1)[0].strip().lower().startswith("application/grpc-web")


# ---------------------------------------------------------------------------------------------------------------
# Registry: the `server` that add_XServicer_to_server registers on
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class MethodRegistry:
    """Collects method handlers exactly as a grpc server does, keyed by path (``/pkg.Service/Method``)."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        for method, handler in method_handlers.items():
            self._handlers[f"/{service_name}/{method}"] = handler

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def lookup(self, path: str) -> grpc.RpcMethodHandler | None:
        handler = self._handlers.get(path)
        if handler is not None:
            return handler
        # Generated code registers the same handlers both ways; generic ones cover hand-written servicers.
        for generic in self._generic:
            handler = generic.service(_CallDetails(path, ()))
            if handler is not None:
                return handler
        return None

    @property
    def methods(self) -> list[str]:
        """The registered method paths, sorted."""
        return sorted(self._handlers)


# ---------------------------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------------------------


class FramingError(Exception):
    """The request body is not a valid gRPC-Web message."""


def encode_frame(flag: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(flag, len(payload)) + payload


def encode_trailers(code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str | bytes]] = ()) -> bytes:
    """The payload of a trailer frame."""
    # "key:value" with no space: valid HTTP/1 header syntax, and the easiest for a game's hand-written parser.
    lines = [f"grpc-status:{code.value[0]}", f"grpc-message:{percent_encode(details)}"]
    for key, value in metadata:
        lines.append(f"{key.lower()}:{_metadata_value(key, value)}")
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


def percent_encode(message: str) -> str:
    """grpc-message encoding: UTF-8, with bytes outside printable ASCII and '%' percent-encoded."""
    return quote(message, safe="".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%"))


def _metadata_value(key: str, value: str | bytes) -> str:
    if key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode()
        return base64.b64encode(raw).decode("ascii")
    return value.decode("latin-1") if isinstance(value, bytes) else value


def decode_text_body(body: bytes) -> bytes:
    """Decodes a grpc-web-text body, which may be several padded base64 chunks back to back."""
    data = re.sub(rb"\s+", b"", body)
    try:
        return b"".join(base64.b64decode(chunk, validate=True) for chunk in re.findall(rb"[^=]+=*", data))
    except (binascii.Error, ValueError) as exc:
        raise FramingError(f"the grpc-web-text body is not valid base64: {exc}") from exc


def decode_request_message(body: bytes) -> bytes:
    """The one message of a unary-request call (gRPC-Web has no client streaming)."""
    if len(body) < _FRAME_HEADER.size:
        raise FramingError(
            f"the body has {len(body)} bytes; a gRPC-Web request is one frame: flag byte, 4-byte big-endian length, "
            "message"
        )
    flag, length = _FRAME_HEADER.unpack_from(body)
    if flag & _COMPRESSED_FLAG:
        raise FramingError("compressed messages are not supported; send grpc-encoding identity")
    if flag != _MESSAGE_FLAG:
        raise FramingError(f"the first frame has flag {flag:#04x}; a request message frame has flag 0x00")
    end = _FRAME_HEADER.size + length
    if len(body) < end:
        raise FramingError(f"the frame announces {length} bytes but the body holds {len(body) - 5}")
    rest = body[end:]
    # A client may close with an empty trailer frame; anything else is a second message.
    if rest and not (rest[0] & _TRAILER_FLAG):
        raise FramingError("the body holds more than one message; gRPC-Web requests carry exactly one")
    return body[_FRAME_HEADER.size : end]


def parse_timeout(value: str | None) -> float | None:
    """grpc-timeout header to seconds; None when absent. Raises ValueError when malformed."""
    if not value:
        return None
    match = _GRPC_TIMEOUT.match(value.strip())
    if match is None:
        raise ValueError(f"grpc-timeout {value!r} is malformed; use up to 8 digits and a unit H, M, S, m, u or n")
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


# ---------------------------------------------------------------------------------------------------------------
# The servicer context
# ---------------------------------------------------------------------------------------------------------------


class _Abort(grpc.aio.AbortError):  # type: ignore[misc]
    """Raised by WebContext.abort; a subclass of grpc.aio's own so servicer code treats both the same."""


class WebContext:
    """The parts of ``grpc.aio.ServicerContext`` a servicer uses, for a call that arrived over gRPC-Web."""

    def __init__(
        self,
        metadata: tuple[tuple[str, str | bytes], ...],
        deadline: float | None,
        peer: str,
        write: Callable[[Any], Awaitable[None]],
        send_headers: Callable[[], Awaitable[None]],
    ) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._peer = peer
        self._write = write
        self._send_headers = send_headers
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._cancelled = False
        self._done = False
        self._callbacks: list[Callable[[WebContext], None]] = []

    # -- what servicers read
    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    # -- what servicers set
    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str | bytes]] = ()
    ) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort() needs a non-OK status code")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise _Abort(details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        await self._send_headers()

    async def write(self, message: Any) -> None:
        await self._write(message)

    def set_compression(self, compression: grpc.Compression) -> None:
        """Responses are never compressed over gRPC-Web here."""

    def disable_next_message_compression(self) -> None:
        """Responses are never compressed over gRPC-Web here."""

    def add_done_callback(self, callback: Callable[[WebContext], None]) -> None:
        self._callbacks.append(callback)

    def _finish(self, cancelled: bool) -> None:
        self._cancelled, self._done = cancelled, True
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback failed")


# ---------------------------------------------------------------------------------------------------------------
# The response
# ---------------------------------------------------------------------------------------------------------------


class _Response:
    """Writes one gRPC-Web response: headers on the first message (or before the trailer), frames as produced."""

    def __init__(self, send: Send, text: bool) -> None:
        self._send = send
        self._text = text
        self.headers_sent = False
        self.messages = 0
        #: Set for server-streaming calls. A browser that aborts a fetch may keep a keep-alive connection open
        #: for seconds to reuse it (seen with Godot's web build in Chromium), so the server would hear of the
        #: cancel late and keep generating. A connection per stream makes an abort a disconnect at once.
        self.close_connection = False

    def _headers(self) -> list[tuple[bytes, bytes]]:
        content_type = CONTENT_TYPE_TEXT if self._text else CONTENT_TYPE_BINARY
        headers = [(b"content-type", content_type.encode()), (b"grpc-accept-encoding", b"identity")]
        if self.close_connection:
            headers.append((b"connection", b"close"))
        return headers

    def _body(self, frame: bytes) -> bytes:
        return base64.b64encode(frame) if self._text else frame

    async def send_headers(self) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            await self._send({"type": "http.response.start", "status": 200, "headers": self._headers()})

    async def message(self, payload: bytes) -> None:
        await self.send_headers()
        self.messages += 1
        body = self._body(encode_frame(_MESSAGE_FLAG, payload))
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(
        self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        if not self.headers_sent and code != grpc.StatusCode.OK:
            # Trailers-only: the status rides in the HTTP headers and the body is empty.
            headers = [
                *self._headers(),
                (b"grpc-status", str(code.value[0]).encode()),
                (b"grpc-message", percent_encode(details).encode()),
            ]
            headers += [(k.lower().encode(), _metadata_value(k, v).encode("latin-1")) for k, v in trailing]
            self.headers_sent = True
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await self.send_headers()
        body = self._body(encode_frame(_TRAILER_FLAG, encode_trailers(code, details, trailing)))
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


# ---------------------------------------------------------------------------------------------------------------
# The bridge
# ---------------------------------------------------------------------------------------------------------------


class GrpcWebBridge:
    """An ASGI endpoint that serves the methods of a MethodRegistry as gRPC-Web."""

    def __init__(self, registry: MethodRegistry, tracker: CallTracker, max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.registry = registry
        self.tracker = tracker
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        text = headers.get("content-type", "").lower().startswith("application/grpc-web-text")
        response = _Response(send, text)
        if scope["method"] != "POST":
            await response.finish(grpc.StatusCode.UNIMPLEMENTED, f"gRPC-Web calls use POST, not {scope['method']}")
            return
        if self.tracker.draining:
            await response.finish(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another server")
            return
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge as exc:
            await response.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; send a smaller message")
            return
        if body is None:
            return
        await self._serve(scope, headers, body, text, receive, response)

    async def _serve(
        self, scope: Scope, headers: dict[str, str], body: bytes, text: bool, receive: Receive, response: _Response
    ) -> None:
        path: str = scope["path"]
        handler = self.registry.lookup(path)
        if handler is None:
            await response.finish(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path}")
            return
        if handler.request_streaming:
            await response.finish(grpc.StatusCode.UNIMPLEMENTED, f"{path} streams requests, which gRPC-Web cannot do")
            return
        response.close_connection = handler.response_streaming
        encoding = headers.get("grpc-encoding", "identity")
        if encoding != "identity":
            message = f"grpc-encoding {encoding} is not supported; use identity"
            await response.finish(grpc.StatusCode.UNIMPLEMENTED, message)
            return
        try:
            timeout = parse_timeout(headers.get("grpc-timeout"))
            raw = decode_request_message(decode_text_body(body) if text else body)
        except (FramingError, ValueError) as exc:
            await response.finish(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        try:
            request = handler.request_deserializer(raw) if handler.request_deserializer else raw
        except Exception as exc:
            await response.finish(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message for {path}: {exc}"
            )
            return

        serialize: Callable[[Any], bytes] = handler.response_serializer or (lambda m: m)

        async def write(message: Any) -> None:
            await response.message(serialize(message))

        deadline = None if timeout is None else time.monotonic() + timeout
        client = scope.get("client")
        peer = f"ipv4:{client[0]}:{client[1]}" if client else "unknown"
        context = WebContext(_metadata(headers), deadline, peer, write, response.send_headers)
        status: list[tuple[grpc.StatusCode, str]] = []

        async def work() -> None:
            status.append(await _invoke(handler, request, context, write))

        outcome = await run_call(work(), receive, self.tracker, timeout)
        context._finish(cancelled=outcome is not Outcome.DONE)
        if outcome is Outcome.DISCONNECTED:
            log.info("%s: client disconnected; call cancelled", path)
            return
        if outcome is Outcome.SHUTDOWN:
            code, details = grpc.StatusCode.UNAVAILABLE, "the server shut down before the call finished; retry"
        elif outcome is Outcome.DEADLINE:
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
        else:
            code, details = status[0]
        await response.finish(code, details, context.trailing_metadata())


async def _invoke(
    handler: grpc.RpcMethodHandler, request: Any, context: WebContext, write: Callable[[Any], Awaitable[None]]
) -> tuple[grpc.StatusCode, str]:
    """Runs the servicer method, writing each response message; returns the final status."""
    try:
        if handler.unary_unary is not None:
            result = handler.unary_unary(request, context)
            if inspect.isawaitable(result):
                result = await result
            if result is not None and (context.code() in (None, grpc.StatusCode.OK)):
                await write(result)
            elif context.code() in (None, grpc.StatusCode.OK):
                return grpc.StatusCode.INTERNAL, "the method returned no response"
        elif handler.unary_stream is not None:
            result = handler.unary_stream(request, context)
            if isinstance(result, AsyncIterable):
                try:
                    async for message in result:
                        await write(message)
                finally:
                    # Cancelled while writing, the servicer sits at a yield: close it now, not at garbage collection,
                    # so the engine stops at once.
                    aclose = getattr(result, "aclose", None)
                    if aclose is not None:
                        await aclose()
            elif inspect.isawaitable(result):
                await result  # a servicer that calls context.write() itself
            else:
                for message in result:
                    await write(message)
        else:
            return grpc.StatusCode.UNIMPLEMENTED, "this method streams requests, which gRPC-Web cannot do"
    except grpc.aio.AbortError:
        pass
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error in a gRPC-Web call")
        return grpc.StatusCode.INTERNAL, "internal server error"
    code = context.code() or grpc.StatusCode.OK
    return code, context.details() if code != grpc.StatusCode.OK else ""


def _metadata(headers: dict[str, str]) -> tuple[tuple[str, str | bytes], ...]:
    """Request headers as gRPC invocation metadata (``-bin`` values base64-decoded, as grpc does)."""
    items: list[tuple[str, str | bytes]] = []
    for key, value in headers.items():
        if key in _NOT_METADATA or key.startswith(("access-control-", "sec-", ":")):
            continue
        if key.endswith("-bin"):
            try:
                items.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
            except binascii.Error:
                continue
        else:
            items.append((key, value))
    return tuple(items)
