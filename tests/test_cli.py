"""The command line and settings: flags > environment > config file > defaults, and bad values fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from npcserver.cli import _settings_from, build_parser
from npcserver.config import Settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults_listen_on_localhost_only() -> None:
    s = Settings()
    assert (s.grpc_host, s.grpc_port, s.http_host, s.http_port) == ("127.0.0.1", 50051, "127.0.0.1", 8080)
    assert s.api_key is None and s.cors_origins == []


def test_precedence_flag_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "npc.toml"
    cfg.write_text('grpc_port = 6000\nhttp_port = 6001\nctx_size = 1024\ncors_origins = ["http://game.local"]\n')
    monkeypatch.setenv("NPCSERVER_HTTP_PORT", "7001")
    monkeypatch.setenv("NPCSERVER_CTX_SIZE", "2048")
    args = build_parser().parse_args(["serve", "--config", str(cfg), "--ctx-size", "512", "--no-http-enabled"])
    s = _settings_from(args)
    assert s.grpc_port == 6000  # file
    assert s.http_port == 7001  # env beats file
    assert s.ctx_size == 512  # flag beats env
    assert s.http_enabled is False
    assert s.cors_origins == ["http://game.local"]


def test_cors_origins_from_env_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPCSERVER_CORS_ORIGINS", "http://a.test, http://b.test")
    assert Settings().cors_origins == ["http://a.test", "http://b.test"]


def test_invalid_setting_exits_2_naming_the_field() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "npcserver", "serve", "--grpc-port", "70000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "grpc_port" in result.stderr and "less than or equal to 65535" in result.stderr


def test_missing_model_file_fails_fast_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "npcserver",
            "serve",
            "--model",
            str(missing),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert str(missing) in result.stderr


def test_readme_quickstart_and_ci_agree() -> None:
    readme = (REPO / "README.md").read_text()
    assert "./scripts/serve.sh" in readme and "./scripts/test.sh" in readme
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
