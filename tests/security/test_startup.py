"""Credentials at startup: the --api-key flag is warned about, and a bad keys file or TLS file stops the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # each test starts a server process (it stops before loading the model)


def serve(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "npcserver", "serve", "--grpc-port", "0", "--http-port", "0",
         "--data-dir", str(tmp_path / "data"), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("NPCSERVER_")}, **env},
    )  # fmt: skip


def test_the_api_key_flag_works_but_warns_that_the_process_list_shows_it(tmp_path: Path) -> None:
    # A missing model file makes the server stop right after the settings are read (the warning comes first).
    result = serve(tmp_path, "--api-key", "sesame", "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "--api-key is visible to every user of this machine in the process list" in result.stderr
    assert "sesame" not in result.stderr
    quiet = serve(tmp_path, "--model", str(tmp_path / "nope.gguf"), NPCSERVER_API_KEY="sesame")
    assert quiet.returncode == 1 and "process list" not in quiet.stderr


def test_a_bad_keys_file_stops_the_server_naming_the_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "game"\nrole = "owner"\nhash = "x"\n', encoding="utf-8")
    result = serve(tmp_path, NPCSERVER_API_KEYS_FILE=str(keys))
    assert result.returncode == 1, result.stderr[-3000:]
    expected = "[[keys]] entry 1 ('game'): unknown role 'owner': use one of player, designer, admin"
    assert expected in result.stderr, result.stderr[-3000:]


def test_a_short_token_secret_and_a_missing_certificate_stop_the_server(tmp_path: Path) -> None:
    short = serve(tmp_path, NPCSERVER_PLAYER_TOKEN_SECRET="too-short")
    assert short.returncode == 1 and "use at least 32 random bytes" in short.stderr, short.stderr[-3000:]
    missing = tmp_path / "key.pem"
    tls = serve(tmp_path, "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(missing))
    assert tls.returncode == 1, tls.stderr[-3000:]
    assert "cannot read the TLS certificate or key" in tls.stderr and str(missing) in tls.stderr, tls.stderr[-3000:]
