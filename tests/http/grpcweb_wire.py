"""A raw gRPC-Web client for the tests: HTTP/1.1 over a plain socket, chunked decoding, and a timestamp on every
chunk read, so a test can see whether messages arrived one by one or all at the end.

It is written from grpc's doc/PROTOCOL-WEB.md, independently of the server's bridge, so the two do not share bugs.
"""

from __future__ import annotations

import base64
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class WebReply:
    """What came back from one call."""

    http_status: int
    headers: dict[str, str]
    #: (seconds since the request was sent, decoded body bytes) per HTTP chunk, in arrival order.
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    #: Message payloads, and the time the chunk that completed each one arrived.
    messages: list[bytes] = field(default_factory=list)
    message_times: list[float] = field(default_factory=list)
    #: The trailer frame's fields, or None when the body had no trailer frame.
    trailers: dict[str, str] | None = None
    #: True when the client hung up on purpose (``hang_up_after``).
    hung_up: bool = False

    @property
    def trailers_only(self) -> bool:
        return "grpc-status" in self.headers and not self.messages and self.trailers is None

    @property
    def status(self) -> int:
        source = self.trailers if self.trailers is not None else self.headers
        return int(source["grpc-status"])

    @property
    def message(self) -> str:
        source = self.trailers if self.trailers is not None else self.headers
        return unquote(source.get("grpc-message", ""))


def frame(payload: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(payload)) + payload


def call(
    host: str,
    port: int,
    path: str,
    request: bytes,
    *,
    text: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    hang_up_after: int | None = None,
    raw_body: bytes | None = None,
) -> WebReply:
    """Makes one gRPC-Web call. ``hang_up_after=n`` closes the connection once n messages have arrived."""
    body = raw_body if raw_body is not None else frame(request)
    content_type = "application/grpc-web-text" if text else "application/grpc-web+proto"
    if text and raw_body is None:
        body = base64.b64encode(body)
    head = {
        "Host": f"{host}:{port}",
        "Content-Type": content_type,
        "Accept": content_type,
        "X-Grpc-Web": "1",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    request_bytes = f"POST {path} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items())
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        start = time.monotonic()
        sock.sendall(request_bytes + b"\r\n" + body)
        return _read_reply(sock, start, text, hang_up_after)
    finally:
        sock.close()


class _Reader:
    def __init__(self, sock: socket.socket, start: float) -> None:
        self.sock, self.start, self.buf = sock, start, b""

    def fill(self) -> float:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data
        return time.monotonic() - self.start

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _read_reply(sock: socket.socket, start: float, text: bool, hang_up_after: int | None) -> WebReply:
    reader = _Reader(sock, start)
    status_line = reader.line().decode()
    reply = WebReply(int(status_line.split()[1]), {})
    while line := reader.line():
        key, _, value = line.decode("latin-1").partition(":")
        reply.headers[key.strip().lower()] = value.strip()
    pending = b""  # body bytes not yet parsed into frames
    text_pending = b""  # grpc-web-text characters not yet decoded

    def take(data: bytes, at: float) -> bool:
        nonlocal pending, text_pending
        reply.chunks.append((at, data))
        if text:
            text_pending += data
            usable = len(text_pending) - len(text_pending) % 4
            data, text_pending = base64.b64decode(text_pending[:usable]), text_pending[usable:]
        pending += data
        while len(pending) >= 5:
            flag, length = struct.unpack(">BI", pending[:5])
            if len(pending) < 5 + length:
                break
            payload, pending = pending[5 : 5 + length], pending[5 + length :]
            if flag & 0x80:
                fields = {}
                for row in payload.decode("ascii").split("\r\n"):
                    if row:
                        k, _, v = row.partition(":")
                        fields[k.strip().lower()] = v.strip()
                reply.trailers = fields
            else:
                reply.messages.append(payload)
                reply.message_times.append(at)
                if hang_up_after is not None and len(reply.messages) >= hang_up_after:
                    return False
        return True

    if reply.headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(reader.line().split(b";")[0], 16)
            if size == 0:
                break
            data = reader.exactly(size)
            at = time.monotonic() - start
            reader.exactly(2)
            if not take(data, at):
                reply.hung_up = True
                return reply
        return reply
    length = int(reply.headers.get("content-length", "0"))
    take(reader.exactly(length), time.monotonic() - start)
    return reply
