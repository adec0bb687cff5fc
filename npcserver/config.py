"""Server settings: one pydantic-settings model read from flags, environment (NPCSERVER_*) and a TOML file.

Precedence, highest first: command-line flags, environment variables, the config file, the defaults below.
The CLI derives its ``serve`` flags from this model (``npcserver.cli``), so every setting is documented once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "NPCSERVER_"
CONFIG_ENV = "NPCSERVER_CONFIG"


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "npcserver"


class Settings(BaseSettings):
    """Everything the server can be told. Flags: ``--grpc-port 50052``; env: ``NPCSERVER_GRPC_PORT=50052``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # --- doors -------------------------------------------------------------------------------------------------
    grpc_host: str = Field("127.0.0.1", description="gRPC listen address. Use 0.0.0.0 to expose it beyond localhost.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_enabled: bool = Field(True, description="Serve the HTTP/1.1 door (gRPC-Web and OpenAI REST).")
    http_host: str = Field("127.0.0.1", description="HTTP door listen address.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP door port (0 picks a free one).")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS on the HTTP door (empty: CORS off; '*': any)."
    )
    api_key: SecretStr | None = Field(
        None,
        description="An admin API key (prefer NPCSERVER_API_KEY or api_keys_file: a flag shows in the process list).",
    )
    api_keys_file: Path | None = Field(
        None, description="TOML file of hashed API keys with roles (player, designer, admin); see `npcserver hash-key`."
    )
    player_token_secret: SecretStr | None = Field(
        None,
        description="HS256 secret (32+ bytes) that player tokens are signed with. Environment or config file only.",
        json_schema_extra={"cli": False},
    )
    player_token_secret_file: Path | None = Field(
        None, description="File holding the HS256 player token secret (instead of player_token_secret)."
    )
    player_token_public_key_file: Path | None = Field(
        None, description="PEM public key (RSA: RS256, EC P-256: ES256) that verifies player tokens."
    )
    player_token_max_ttl_s: float = Field(
        86400.0, gt=0, description="Longest accepted player token lifetime from now (exp), in seconds."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain: serve both doors over TLS (gRPC with TLS, HTTPS). Needs tls_key_file."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    shutdown_grace_s: float = Field(5.0, ge=0, description="Seconds in-flight streams get to finish on shutdown.")

    # --- model and engine ----------------------------------------------------------------------------------------
    model: str | None = Field(None, description="Path to a GGUF model. Empty: the embedded Gemma 3 270M Q4_K_M.")
    model_id: str | None = Field(None, description="Model id clients use. Empty: the model file's stem.")
    n_gpu_layers: int = Field(-1, ge=-1, description="Layers to offload to the GPU (-1: all, 0: none).")
    threads: int = Field(-1, ge=-1, description="CPU threads for inference (-1: all cores).")
    ctx_size: int = Field(
        4096, ge=0, description="Context window in tokens, per conversation slot (0: the model's own maximum)."
    )
    parallel: int = Field(
        8, ge=1, le=256, description="Sequences decoded together; each keeps one conversation's KV cache between turns."
    )
    max_queue: int = Field(
        32, ge=0, description="Requests that may wait beyond the running ones; more get RESOURCE_EXHAUSTED."
    )
    ram_cache_mb: int = Field(
        256, ge=0, description="RAM for the KV of idle conversations evicted from their slot (0: none in RAM)."
    )
    kv_disk_mb: int = Field(
        2048,
        ge=0,
        description="Disk for the KV of idle conversations once ram_cache_mb is full, least recently used deleted "
        "first; a returning conversation is restored instead of reading its history again (0: no disk tier).",
    )
    kv_disk_dir: Path | None = Field(None, description="Folder for that KV. Empty: kv-cache in the data directory.")
    ready_timeout_s: float = Field(300.0, gt=0, description="Give up if the model is not loaded within this time.")
    cache_dir: Path = Field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"), description="Model cache.")
    engine_url: str | None = Field(
        None,
        description="URL of a running inference server (llama-server, vLLM, SGLang) to generate with instead of "
        "loading the model here; model must still name the GGUF it runs (its vocabulary is read here). Then "
        "parallel is the requests sent to it at once.",
    )
    engine_api: Literal["llama-server", "openai"] = Field(
        "llama-server",
        description="The API engine_url speaks: llama-server's /completion, or an OpenAI-compatible /v1/completions.",
    )
    engine_model: str | None = Field(
        None, description="Model name sent to an OpenAI-compatible engine_url (empty: the first it lists)."
    )
    engine_grammar_field: str = Field(
        "structured_outputs.grammar",
        description="Where an OpenAI-compatible engine_url takes a GBNF grammar: structured_outputs.grammar (vLLM), "
        "guided_grammar (vLLM before 0.11), ebnf (SGLang), grammar (llama-server), or empty (none, e.g. Ollama).",
    )
    engine_api_key: SecretStr | None = Field(
        None,
        description="Bearer key for engine_url (prefer NPCSERVER_ENGINE_API_KEY: a flag shows in the process list).",
    )
    engine_timeout_s: float = Field(
        60.0, gt=0, description="Longest silence from engine_url during a reply before it counts as failed."
    )

    # --- dialogue ------------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"),
        description="Where conversations and personas are stored (SQLite), unless store_url is set.",
    )
    store_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host:5432/db) of a store that several servers share; "
        "needs the 'postgres' extra. Empty: SQLite in data_dir.",
    )
    personas_dir: Path | None = Field(
        Path("personas"), description="Folder of persona TOML files: loaded at startup, applied again when saved."
    )
    presets_file: Path | None = Field(
        None, description="TOML file of extra or replacement sampling presets (applied again when saved)."
    )
    lore_dir: Path | None = Field(
        Path("lore"), description="Folder of lore book TOML files: loaded at startup, applied again when saved."
    )
    memory_budget: int = Field(
        128, ge=0, description="Tokens of recalled memories a Talk prompt may carry (0: memories are not recalled)."
    )
    max_memories: int = Field(
        20000, ge=0, description="Most memories one conversation may hold; adding more is RESOURCE_EXHAUSTED."
    )
    default_preset: str = Field("dialogue", description="Preset used when neither request nor persona names one.")
    default_max_tokens: int = Field(256, ge=0, description="Reply length cap when nothing else sets max_tokens.")
    max_message_chars: int = Field(8000, ge=1, description="Longest accepted message or player line, in characters.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level. At DEBUG the request log also carries the player's text."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as plain text or one JSON object each (with a line per request: its id, door, method, "
        "persona, conversation, status, tokens and timings).",
    )

    # --- operations ----------------------------------------------------------------------------------------------
    rate_limit_requests_per_minute: int = Field(
        0,
        ge=0,
        description="Requests per minute each caller (API key, player, or client address) may make; more get "
        "RESOURCE_EXHAUSTED / 429 with a retry hint (0: no limit).",
    )
    rate_limit_tokens_per_minute: int = Field(
        0, ge=0, description="Tokens per minute each caller's replies may generate; more as above (0: no limit)."
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics on the HTTP door.")
    metrics_public: bool = Field(
        False, description="Serve /metrics without a key when keys are configured (a scraper that cannot send one)."
    )
    designer_endpoints: bool = Field(
        True,
        description="Serve the designer's workbench: RenderPrompt and Compare (gRPC, REST) and the /playground page.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # Environment variables carry a comma-separated list ("*" or "http://a,http://b") as well as JSON.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("store_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # empty (as an environment variable can only be): SQLite
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("store_url must be a PostgreSQL URL starting postgresql:// (or empty for SQLite)")
        return value

    @field_validator("engine_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # empty: the embedded engine
        if not value.startswith(("http://", "https://")):
            raise ValueError("engine_url must start with http:// or https:// (e.g. http://127.0.0.1:8081)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def player_token_secret_bytes(self) -> bytes | None:
        """The HS256 secret from player_token_secret or player_token_secret_file (a trailing newline dropped)."""
        if self.player_token_secret is not None:
            return self.player_token_secret.get_secret_value().encode()
        if self.player_token_secret_file is not None:
            try:
                return self.player_token_secret_file.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read player_token_secret_file: {exc}") from exc
        return None

    @model_validator(mode="after")
    def _check_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.player_token_secret is not None and self.player_token_secret_file is not None:
            raise ValueError("set player_token_secret or player_token_secret_file, not both")
        return self
