"""Credentials into callers: API keys with roles, and signed player tokens (JWT). Used by NpcService.admit only.

API keys come from a keys file (TOML, hashed keys, each with a name and a role) and from one plain admin key
(``NPCSERVER_API_KEY``, or the ``--api-key`` flag). Keys are hashed with scrypt (``hashlib.scrypt``): a memory-hard
KDF in the standard library, so a leaked keys file does not give the keys away even when people chose weak ones, and
no native dependency is added. Keys that ``npcserver hash-key --generate`` makes start with a public id
(``npc_<8 hex>_<secret>``) that the entry stores, so a key is checked against its own entry only and a key with an
unknown id is refused without any scrypt work: guessing costs the server nothing. A key people chose (no id) is
checked against every entry without an id. Either outcome is then remembered (by the key's SHA-256, never the key),
so a client's later requests cost a dictionary lookup.

Player tokens are JWTs (PyJWT) that a game backend mints: HS256 with a shared secret, or RS256/ES256 checked with the
backend's public key. ``exp`` is required and bounded (``max_ttl_s``), the audience is "npcserver", and the claims
``conversation_prefix`` and ``personas`` limit what the token may touch (see ``access``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import tomllib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcserver.errors import Unauthenticated
from npcserver.service.access import OPEN, Caller, Role

if TYPE_CHECKING:
    from npcserver.config import Settings

# scrypt cost: 16 MiB and tens of milliseconds per check (the parameters are stored in each hash, so they can grow).
_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P = 14, 8, 1
_SCRYPT_PREFIX = "$scrypt$"

#: The ``aud`` every player token must carry, so a token minted for another service is not accepted here.
TOKEN_AUDIENCE = "npcserver"
#: Seconds of clock difference tolerated between the game backend and this server.
TOKEN_LEEWAY_S = 10
#: Shortest HS256 secret accepted, in bytes (RFC 7518 3.2: at least the hash's size).
MIN_SECRET_BYTES = 32
_REMEMBERED_KEYS = 1024
#: The public id at the start of a generated key: ``npc_<8 hex>_``.
_KEY_ID = re.compile(r"^(npc_[0-9a-f]{8})_")


def new_key() -> str:
    """A random API key with a public id: ``npc_<8 hex>_<43 characters of secret>``."""
    return f"npc_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def key_id(key: str) -> str | None:
    """The public id of a generated key (``npc_<8 hex>``), or None for a key people chose."""
    found = _KEY_ID.match(key)
    return found.group(1) if found else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_key(key: str) -> str:
    """The keys-file hash of ``key``: ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64, like PHC strings)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=2**_SCRYPT_LOG2_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"{_SCRYPT_PREFIX}ln={_SCRYPT_LOG2_N},r={_SCRYPT_R},p={_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(log2 n, r, p, salt, digest) of a ``hash_key`` string; ValueError naming what is wrong."""
    if not encoded.startswith(_SCRYPT_PREFIX):
        raise ValueError(f"a key hash starts with {_SCRYPT_PREFIX!r} (make one with `npcserver hash-key`)")
    try:
        params_text, salt_text, digest_text = encoded[len(_SCRYPT_PREFIX) :].split("$")
        params = dict(item.split("=", 1) for item in params_text.split(","))
        log2_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        salt, digest = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, KeyError) as exc:
        raise ValueError(
            "a key hash looks like $scrypt$ln=14,r=8,p=1$<salt>$<hash>; make one with `npcserver hash-key`"
        ) from exc
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 16 and len(digest) >= 32):
        raise ValueError("a key hash has scrypt parameters or lengths out of range; make one with `npcserver hash-key`")
    return log2_n, r, p, salt, digest


def verify_key(key: str, encoded: str) -> bool:
    log2_n, r, p, salt, digest = _parse_hash(encoded)
    n = 2**log2_n
    candidate = hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=256 * n * r + 2**20)
    return hmac.compare_digest(candidate, digest)


@dataclass(frozen=True)
class ApiKey:
    """One keys-file entry: a name (it appears in logs and errors, never the key), a role, the key's hash, and the
    key's public id when it has one (``key_id``)."""

    name: str
    role: Role
    hash: str
    id: str | None = None


def load_keys_file(path: Path) -> list[ApiKey]:
    """The ``[[keys]]`` entries of a keys file; ValueError naming the file and the entry at fault."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the keys file {path}: {exc}") from exc
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"the keys file {path} has no [[keys]] entries (add some with `npcserver hash-key`)")
    keys: list[ApiKey] = []
    for i, entry in enumerate(entries):
        where = f"{path}: [[keys]] entry {i + 1}"
        if not isinstance(entry, dict) or set(entry) - {"name", "role", "hash", "id"}:
            raise ValueError(f"{where}: an entry has the fields name, role and hash (and id for a generated key)")
        name, role, encoded, public_id = entry.get("name"), entry.get("role"), entry.get("hash"), entry.get("id")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: 'name' must be a non-empty string")
        if any(k.name == name for k in keys):
            raise ValueError(f"{where}: the name {name!r} is used twice; each key needs its own")
        if not isinstance(role, str) or not isinstance(encoded, str):
            raise ValueError(f"{where} ({name!r}): 'role' and 'hash' must be strings")
        if public_id is not None and (not isinstance(public_id, str) or key_id(public_id + "_") != public_id):
            raise ValueError(f"{where} ({name!r}): 'id' must look like npc_<8 hex> (as `npcserver hash-key` writes it)")
        try:
            parsed_role = Role.parse(role)
            _parse_hash(encoded)
        except ValueError as exc:
            raise ValueError(f"{where} ({name!r}): {exc}") from None
        keys.append(ApiKey(name, parsed_role, encoded, public_id))
    return keys


class TokenVerifier:
    """Checks player tokens: HS256 with ``secret`` and/or RS256/ES256 with ``public_key_pem``."""

    def __init__(
        self, secret: bytes | None = None, public_key_pem: bytes | None = None, max_ttl_s: float = 86400
    ) -> None:
        import jwt  # the server extra installs PyJWT; imported here so the service layer loads without it

        self._jwt = jwt
        self.max_ttl_s = max_ttl_s
        self._keys: dict[str, Any] = {}
        if secret is not None:
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"the player token secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            self._keys["HS256"] = secret
        if public_key_pem is not None:
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                key = load_pem_public_key(public_key_pem)
            except ValueError as exc:
                raise ValueError(f"the player token public key is not a PEM public key: {exc}") from None
            if isinstance(key, rsa.RSAPublicKey):
                self._keys["RS256"] = key
            elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
                self._keys["ES256"] = key
            else:
                raise ValueError("the player token public key must be RSA (RS256) or EC P-256 (ES256)")
        if not self._keys:
            raise ValueError("a token verifier needs a secret or a public key")

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str) -> Caller:
        """The player a valid token names; Unauthenticated saying what is wrong with an invalid one."""
        jwt = self._jwt
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise Unauthenticated("the player token is not a well-formed JWT", code="invalid_token") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise Unauthenticated(
                f"the player token is signed with {algorithm!r}; this server accepts {', '.join(self.algorithms)}",
                code="invalid_token",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=TOKEN_AUDIENCE,
                leeway=TOKEN_LEEWAY_S,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "the player token has expired; ask the game backend for a fresh one", code="token_expired"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the player token's signature does not verify (it was changed, or signed with another key)",
                code="invalid_token",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the player token lacks the {exc.claim!r} claim", code="invalid_token") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the player token's 'aud' must be {TOKEN_AUDIENCE!r}", code="invalid_token"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the player token is invalid: {exc}", code="invalid_token") from None
        return self._caller(claims)

    def _caller(self, claims: dict[str, Any]) -> Caller:
        def invalid(message: str) -> Unauthenticated:
            return Unauthenticated(f"the player token is invalid: {message}", code="invalid_token")

        if claims["exp"] - time.time() > self.max_ttl_s + TOKEN_LEEWAY_S:
            raise invalid(f"it lives longer than this server's limit of {self.max_ttl_s:g} s; mint short-lived tokens")
        subject = claims["sub"]
        prefix = claims.get("conversation_prefix")
        if not isinstance(subject, str) or not subject:
            raise invalid("'sub' (the player) must be a non-empty string")
        if not isinstance(prefix, str) or not prefix:
            raise invalid("'conversation_prefix' must be a non-empty string (the player's conversation ids)")
        personas = claims.get("personas")
        if personas is not None and not (
            isinstance(personas, list) and all(isinstance(p, str) and p for p in personas)
        ):
            raise invalid("'personas' must be a list of persona ids")
        return Caller(
            Role.PLAYER,
            name=subject,
            via="token",
            conversation_prefix=prefix,
            personas=None if personas is None else frozenset(personas),
        )


class Gate:
    """Turns an ``authorization`` value into a Caller. With no keys and no token verifier the server is open."""

    def __init__(
        self, keys: Sequence[ApiKey] = (), *, admin_key: str | None = None, tokens: TokenVerifier | None = None
    ) -> None:
        self.keys = list(keys)
        self.admin_key = admin_key or None
        self.tokens = tokens
        self._remembered: OrderedDict[bytes, ApiKey | None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        """The gate the settings describe; ValueError naming the setting at fault."""
        keys = load_keys_file(settings.api_keys_file) if settings.api_keys_file else []
        secret = settings.player_token_secret_bytes()
        public_key = settings.player_token_public_key_file
        tokens = None
        if secret is not None or public_key is not None:
            try:
                pem = public_key.read_bytes() if public_key is not None else None
            except OSError as exc:
                raise ValueError(f"cannot read player_token_public_key_file: {exc}") from exc
            tokens = TokenVerifier(secret, pem, settings.player_token_max_ttl_s)
        return cls(keys, admin_key=settings.api_key_value, tokens=tokens)

    @property
    def open(self) -> bool:
        """True when no credential is configured: every caller is OPEN (an admin)."""
        return not self.keys and self.admin_key is None and self.tokens is None

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller ``authorization`` (``Bearer <key or token>``) identifies; Unauthenticated when it names none."""
        if self.open:
            return OPEN
        if not authorization:
            raise Unauthenticated(
                "this server needs a credential: send 'authorization: Bearer <API key or player token>'",
                code="missing_key",
            )
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(
                "send the credential as 'authorization: Bearer <API key or player token>'", code="invalid_api_key"
            )
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            # A JWT (base64url of '{"'): API keys made by hash-key never look like one.
            if self.tokens is None:
                raise Unauthenticated(
                    "this looks like a player token, but this server has no player_token_secret or public key",
                    code="invalid_token",
                )
            return self.tokens.verify(credential)
        key = self._match_key(credential)
        if key is None:
            raise Unauthenticated("the API key is wrong: send 'authorization: Bearer <key>'", code="invalid_api_key")
        return Caller(key.role, name=key.name, via="key")

    def _match_key(self, credential: str) -> ApiKey | None:
        if self.admin_key is not None and hmac.compare_digest(credential.encode(), self.admin_key.encode()):
            return ApiKey("api_key", Role.ADMIN, "")
        fingerprint = hashlib.sha256(credential.encode()).digest()
        if fingerprint in self._remembered:
            self._remembered.move_to_end(fingerprint)
            return self._remembered[fingerprint]
        # Only the entry with the key's id (or, for a key without one, the entries without one) is worth a scrypt.
        public_id = key_id(credential)
        candidates = [k for k in self.keys if k.id == public_id]
        found = next((k for k in candidates if verify_key(credential, k.hash)), None)
        self._remembered[fingerprint] = found
        if len(self._remembered) > _REMEMBERED_KEYS:
            self._remembered.popitem(last=False)
        return found
