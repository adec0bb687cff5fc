"""Credentials into callers, without a server: hashed keys and the keys file, player tokens, the hash-key command."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from npcserver.cli import build_parser, main
from npcserver.client import mint_player_token
from npcserver.client import tokens as client_tokens
from npcserver.config import Settings
from npcserver.errors import Unauthenticated
from npcserver.service import auth
from npcserver.service.access import Role
from npcserver.service.auth import ApiKey, Gate, TokenVerifier, hash_key, load_keys_file, verify_key

SECRET = b"s" * 40


def keys_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_a_key_hash_verifies_only_its_key_and_is_salted() -> None:
    encoded = hash_key("open sesame")
    assert encoded.startswith("$scrypt$ln=14,r=8,p=1$") and "open sesame" not in encoded
    assert verify_key("open sesame", encoded)
    assert not verify_key("open sesame!", encoded)
    assert hash_key("open sesame") != encoded  # a fresh salt each time


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('name = "a"\nrole = "wizard"\nhash = "{h}"', "unknown role 'wizard': use one of player, designer, admin"),
        ('name = "a"\nrole = "player"\nhash = "plain-text-key"', "starts with '\\$scrypt\\$'"),
        ('name = ""\nrole = "player"\nhash = "{h}"', "'name' must be a non-empty string"),
        ('name = "a"\nrole = "player"\nhash = "{h}"\nkey = "x"', "the fields name, role and hash \\(and id"),
        ('name = "a"\nrole = "player"\nhash = "{h}"\nid = "key-1"', "'id' must look like npc_<8 hex>"),
    ],
)
def test_a_bad_keys_file_entry_is_named(tmp_path: Path, entry: str, message: str) -> None:
    path = keys_file(tmp_path, "[[keys]]\n" + entry.replace("{h}", hash_key("k")) + "\n")
    with pytest.raises(ValueError, match=f"keys.toml: \\[\\[keys\\]\\] entry 1.*{message}"):
        load_keys_file(path)


def test_a_keys_file_needs_entries_with_distinct_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no \\[\\[keys\\]\\] entries"):
        load_keys_file(keys_file(tmp_path, "# nothing yet\n"))
    entry = f'[[keys]]\nname = "a"\nrole = "player"\nhash = "{hash_key("k")}"\n'
    with pytest.raises(ValueError, match=r"entry 2.*the name 'a' is used twice"):
        load_keys_file(keys_file(tmp_path, entry + entry))


def test_the_gate_gives_each_key_its_role_and_remembers_a_checked_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "".join(
        f'[[keys]]\nname = "{role}-key"\nrole = "{role}"\nhash = "{hash_key(role + "-secret")}"\n'
        for role in ("player", "designer", "admin")
    )
    gate = Gate(load_keys_file(keys_file(tmp_path, body)), admin_key="env-admin")
    assert not gate.open
    for role in Role:
        caller = gate.authenticate(f"Bearer {role}-secret")
        assert (caller.role, caller.name, caller.via) == (role, f"{role}-key", "key")
    assert gate.authenticate("bearer env-admin").role is Role.ADMIN

    checks: list[str] = []

    def counted_verify(key: str, encoded: str) -> bool:
        checks.append(key)
        return False

    monkeypatch.setattr(auth, "verify_key", counted_verify)
    for _ in range(3):
        assert gate.authenticate("Bearer designer-secret").role is Role.DESIGNER  # remembered: no scrypt
        with pytest.raises(Unauthenticated, match="the API key is wrong"):
            gate.authenticate("Bearer guess")
    assert checks == ["guess"] * 3  # one check per entry, once: a wrong key is remembered too


def test_a_generated_key_is_checked_against_its_own_entry_only(monkeypatch: pytest.MonkeyPatch) -> None:
    generated, chosen = auth.new_key(), "a key people chose"
    assert auth.key_id(generated) == generated[:12] and auth.key_id(chosen) is None
    keys = [
        *(ApiKey(f"other-{i}", Role.ADMIN, hash_key(auth.new_key()), f"npc_0000000{i}") for i in range(3)),
        ApiKey("game", Role.PLAYER, hash_key(generated), auth.key_id(generated)),
        ApiKey("tools", Role.DESIGNER, hash_key(chosen)),
    ]
    gate = Gate(keys)
    checked: list[str] = []
    real_verify = auth.verify_key

    def counted_verify(key: str, encoded: str) -> bool:
        checked.append(encoded)
        return real_verify(key, encoded)

    monkeypatch.setattr(auth, "verify_key", counted_verify)
    assert gate.authenticate(f"Bearer {generated}").name == "game"
    assert checked == [keys[3].hash]
    checked.clear()
    assert gate.authenticate(f"Bearer {chosen}").name == "tools" and checked == [keys[4].hash]
    checked.clear()
    with pytest.raises(Unauthenticated, match="the API key is wrong"):
        gate.authenticate(f"Bearer {auth.new_key()}")  # a guess with an unknown id: no scrypt at all
    assert checked == []


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "this server needs a credential: send 'authorization: Bearer <API key or player token>'"),
        ("", "this server needs a credential"),
        ("Basic abc", "send the credential as 'authorization: Bearer"),
        ("Bearer ", "send the credential as 'authorization: Bearer"),
        ("Bearer nope", "the API key is wrong"),
    ],
)
def test_a_missing_or_malformed_credential_is_unauthenticated(authorization: str | None, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        Gate(admin_key="k").authenticate(authorization)


def test_an_open_gate_admits_anyone_as_admin() -> None:
    gate = Gate()
    assert gate.open
    assert gate.authenticate(None).role is Role.ADMIN and gate.authenticate("Bearer anything").via == "open"


def test_a_minted_token_names_its_player_prefix_and_personas() -> None:
    assert client_tokens.AUDIENCE == auth.TOKEN_AUDIENCE
    token = mint_player_token(SECRET, "p1", "p1/", personas=["tavern_keeper"], ttl=60)
    caller = Gate(tokens=TokenVerifier(SECRET)).authenticate(f"Bearer {token}")
    assert (caller.role, caller.name, caller.via, caller.conversation_prefix) == (Role.PLAYER, "p1", "token", "p1/")
    assert caller.personas == frozenset({"tavern_keeper"})
    anywhere = Gate(tokens=TokenVerifier(SECRET)).authenticate(f"Bearer {mint_player_token(SECRET, 'p2', 'p2/')}")
    assert anywhere.personas is None


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    # An hour: the parametrized tokens are minted at collection, and a long run reaches them many minutes later.
    claims: dict[str, object] = {"sub": "p1", "aud": "npcserver", "exp": now + 3600, "conversation_prefix": "p1/"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (jwt.encode(_claims(exp=int(time.time()) - 60), SECRET, "HS256"), "the player token has expired"),
        (jwt.encode(_claims(), b"t" * 40, "HS256"), "signature does not verify"),
        (jwt.encode(_claims(exp=None), SECRET, "HS256"), "lacks the 'exp' claim"),
        (jwt.encode(_claims(sub=None), SECRET, "HS256"), "lacks the 'sub' claim"),
        (jwt.encode(_claims(aud="another-service"), SECRET, "HS256"), "'aud' must be 'npcserver'"),
        (jwt.encode(_claims(conversation_prefix=""), SECRET, "HS256"), "'conversation_prefix' must be a non-empty"),
        (jwt.encode(_claims(personas="tavern_keeper"), SECRET, "HS256"), "'personas' must be a list"),
        (jwt.encode(_claims(exp=int(time.time()) + 10 * 86400), SECRET, "HS256"), "lives longer than"),
        (jwt.encode(_claims(), "", "none"), "signed with 'none'; this server accepts HS256"),
        (jwt.encode(_claims(), b"u" * 64, "HS512"), "signed with 'HS512'"),
        ("eyJhbGciOiJIUzI1NiJ9.not-json.x", "the player token"),
    ],
)
def test_a_bad_token_is_unauthenticated_with_the_reason(token: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        Gate(tokens=TokenVerifier(SECRET)).authenticate(f"Bearer {token}")


def test_a_tampered_token_does_not_verify() -> None:
    token = mint_player_token(SECRET, "p1", "p1/")
    header, _payload, signature = token.split(".")
    forged = jwt.encode(_claims(conversation_prefix=""), b"x" * 40, "HS256").split(".")[1]
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        Gate(tokens=TokenVerifier(SECRET)).authenticate(f"Bearer {header}.{forged}.{signature}")


def test_a_token_on_a_server_without_token_settings_says_so() -> None:
    with pytest.raises(Unauthenticated, match="no player_token_secret or public key"):
        Gate(admin_key="k").authenticate(f"Bearer {mint_player_token(SECRET, 'p1', 'p1/')}")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 random bytes"):
        TokenVerifier(b"short")


@pytest.mark.parametrize(
    ("algorithm", "private_key"),
    [("RS256", rsa.generate_private_key(65537, 2048)), ("ES256", ec.generate_private_key(ec.SECP256R1()))],
)
def test_tokens_signed_by_a_backend_key_verify_with_its_public_key(algorithm: str, private_key: object) -> None:
    assert isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gate = Gate(tokens=TokenVerifier(public_key_pem=public_pem))
    token = mint_player_token(private_pem, "p1", "p1/", algorithm=algorithm)
    assert gate.authenticate(f"Bearer {token}").name == "p1"
    # The public key used as an HMAC secret (algorithm confusion) is refused: only the key's own algorithm counts.
    forged = _hs256_by_hand(_claims(), public_pem)  # PyJWT itself refuses to sign like this
    with pytest.raises(Unauthenticated, match=f"signed with 'HS256'; this server accepts {algorithm}"):
        gate.authenticate(f"Bearer {forged}")


def _hs256_by_hand(claims: dict[str, object], key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def test_minting_without_pyjwt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'npcserver\[tokens\]'"):
        mint_player_token(SECRET, "p1", "p1/")


def test_hash_key_prints_an_entry_for_the_keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("level-tools-key\n"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["hash-key", "--name", "level tools", "--role", "designer"]) == 0
    (entry,) = load_keys_file(keys_file(tmp_path, out.getvalue()))
    assert (entry.name, entry.role) == ("level tools", Role.DESIGNER)
    assert "level-tools-key" not in out.getvalue() and verify_key("level-tools-key", entry.hash)


def test_hash_key_generates_a_key_shown_once_on_stderr(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npcserver", "hash-key", "--name", "game", "--role", "player", "--generate"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    key = done.stderr.rsplit(": ", 1)[1].strip()
    entry = tomllib.loads(done.stdout)["keys"][0]
    assert key.startswith(entry["id"] + "_") and len(key) >= 50 and key not in done.stdout
    assert verify_key(key, entry["hash"])
    (loaded,) = load_keys_file(keys_file(tmp_path, done.stdout))
    assert Gate([loaded]).authenticate(f"Bearer {key}").name == "game"


def test_secrets_are_not_flags_and_tls_needs_both_files(tmp_path: Path) -> None:
    serve_flags = build_parser()._subparsers._group_actions[0].choices["serve"]._option_string_actions  # type: ignore[union-attr, index]
    assert "--player-token-secret" not in serve_flags and "--player-token-secret-file" in serve_flags
    with pytest.raises(ValueError, match="TLS needs both tls_cert_file and tls_key_file"):
        Settings(tls_cert_file=tmp_path / "cert.pem")
