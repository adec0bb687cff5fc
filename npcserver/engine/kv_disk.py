"""The disk tier of the engine's KV cache: idle conversations' sequence state in files, under a size limit.

A town has more NPCs than RAM holds KV for. When the RAM tier (``BatchedEngine``'s ``ram_cache_mb``) is full, the
conversation it would drop is written here instead, one file per conversation, and read back when the
conversation's next line arrives (then the file is removed: its KV lives in a sequence again, and is written anew
when evicted again). The files together stay under ``max_bytes``; the least recently written go first.

A file is only ever used for the conversation and model it was written for: its header names the conversation and
a fingerprint of the model and context layout, and a CRC-32 over the tokens and the state covers both (a hash at
disk speed: a restore is on the path of the NPC's reply), so a truncated, corrupted, renamed or foreign file is
refused (and deleted) rather than restored. The engine then checks
the tokens against the new prompt as it does for the RAM tier: only the prefix they share is kept.

Files are written to a temporary name and renamed, so a crash leaves either the old file or the new one. Only the
scheduler thread uses an instance.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from array import array
from collections import OrderedDict
from pathlib import Path

logger = logging.getLogger(__name__)

_MAGIC = b"NPCKV002"
# magic, fingerprint length, session length, token count, state length
_HEAD = struct.Struct("<8sIIIQ")
_CRC = struct.Struct("<I")
_SUFFIX = ".kv"


def _name(session: str) -> str:
    # A hash, not the session itself: conversation ids are any text, file names are not.
    return hashlib.sha256(session.encode("utf-8")).hexdigest()[:40] + _SUFFIX


class KvDiskCache:
    """Sequence states on disk, keyed by conversation, bounded by ``max_bytes`` with least-recently-written eviction.

    ``fingerprint`` identifies the model and context layout; a file written under another is never restored.
    Files already in ``folder`` (from an earlier run) count toward the limit, oldest first, and are used if they
    pass the checks.
    """

    def __init__(self, folder: Path, max_bytes: int, fingerprint: str) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._fingerprint = fingerprint.encode("utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        #: file name -> size, least recently written first.
        self._files: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0
        #: Counters for tests and the benchmark.
        self.writes = 0
        self.reads = 0
        self.rejected = 0
        found = []
        for path in folder.glob("*" + _SUFFIX):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_mtime_ns, path.name, st.st_size))
        for _, name, size in sorted(found):
            self._files[name] = size
            self.bytes += size
        for stale in folder.glob("*" + _SUFFIX + ".tmp"):  # a write a crash interrupted
            stale.unlink(missing_ok=True)
        self._shrink(0)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, session: str) -> bool:
        return _name(session) in self._files

    def put(self, session: str, tokens: list[int], state: bytes | memoryview) -> bool:
        """Writes a conversation's tokens and sequence state, replacing its previous file. False when it cannot
        (larger than the whole limit, or the disk refused it): the conversation will read its history again."""
        name = _name(session)
        self._drop(name)
        sess = session.encode("utf-8")
        toks = array("i", tokens).tobytes()
        size = _HEAD.size + len(self._fingerprint) + len(sess) + len(toks) + len(state) + _CRC.size
        if size > self.max_bytes:
            return False
        self._shrink(size)
        crc = zlib.crc32(state, zlib.crc32(toks))
        path = self.folder / name
        tmp = path.with_name(name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_HEAD.pack(_MAGIC, len(self._fingerprint), len(sess), len(tokens), len(state)))
                f.write(self._fingerprint)
                f.write(sess)
                f.write(toks)
                f.write(state)
                f.write(_CRC.pack(crc))
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("engine: could not write the KV of %r to %s: %s", session, path, exc)
            tmp.unlink(missing_ok=True)
            return False
        self._files[name] = size
        self.bytes += size
        self.writes += 1
        return True

    def take(self, session: str) -> tuple[list[int], memoryview] | None:
        """Reads and removes a conversation's file: (tokens, state), or None when there is none or it fails a
        check (wrong conversation or model, truncated, corrupted), in which case it is deleted."""
        name = _name(session)
        if name not in self._files:
            return None
        path = self.folder / name
        data = bytearray(self._files[name])
        try:
            with open(path, "rb", buffering=0) as f:
                if f.readinto(data) != len(data) or f.read(1):
                    data = bytearray()
        except OSError:
            data = bytearray()
        self._drop(name)
        got = self._parse(data, session)
        if got is None:
            self.rejected += 1
            logger.warning("engine: refused the saved KV file %s (not this conversation's, or damaged)", path)
            return None
        self.reads += 1
        return got

    def _parse(self, data: bytearray, session: str) -> tuple[list[int], memoryview] | None:
        if len(data) < _HEAD.size + _CRC.size:
            return None
        magic, n_fp, n_sess, n_tok, n_state = _HEAD.unpack_from(data)
        pos = _HEAD.size
        if magic != _MAGIC or len(data) != pos + n_fp + n_sess + 4 * n_tok + n_state + _CRC.size:
            return None
        if data[pos : pos + n_fp] != self._fingerprint:
            return None
        pos += n_fp
        if data[pos : pos + n_sess] != session.encode("utf-8"):
            return None
        pos += n_sess
        view = memoryview(data)  # no copies of the state: it can be megabytes
        toks, state = view[pos : pos + 4 * n_tok], view[pos + 4 * n_tok : len(data) - _CRC.size]
        if zlib.crc32(state, zlib.crc32(toks)) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
            return None
        tokens = array("i")
        tokens.frombytes(toks)
        return tokens.tolist(), state

    def _drop(self, name: str) -> None:
        size = self._files.pop(name, None)
        if size is not None:
            self.bytes -= size
            (self.folder / name).unlink(missing_ok=True)

    def _shrink(self, room: int) -> None:
        """Deletes the least recently written files until ``room`` more bytes fit under the limit."""
        while self._files and self.bytes + room > self.max_bytes:
            self._drop(next(iter(self._files)))
