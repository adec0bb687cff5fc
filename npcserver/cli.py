"""Command line: ``npcserver serve``, ``npcserver chat`` and ``npcserver hash-key``.

The ``serve`` flags are derived from the Settings model, so a setting is declared (with its help text) once.
Logging is configured before the heavy imports (llama_cpp, grpc) so their start-up is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any, get_args, get_origin

try:
    from npcserver.config import CONFIG_ENV, Settings
except ModuleNotFoundError as missing:
    # A client-only install (`pip install npcserver`) has no server dependencies: say what to install instead of
    # printing a traceback.
    raise SystemExit(
        f"npcserver: the server is not installed here ({missing}); this install has only the Python client "
        "(npcserver.client). To run the server or the terminal chat: pip install 'npcserver[server]'"
    ) from None


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") is False:
            continue  # a secret: the process list would show it, so it comes from the environment or a file only
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        annotation = field.annotation
        if annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        choices = None
        if get_origin(annotation) is not None and str(get_origin(annotation)).endswith("Literal"):
            choices = list(get_args(annotation))
        parser.add_argument(
            flag,
            dest=name,
            default=argparse.SUPPRESS,
            choices=choices,
            help=help_text,
            metavar=None if choices else name.upper(),
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npcserver", description="NPC dialogue server for game engines.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server (gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8080)",
        description="Run the server. Every flag can also be set as NPCSERVER_<NAME> or in the --config TOML file.",
    )
    serve.add_argument("--config", help=f"TOML settings file (also {CONFIG_ENV})")
    _add_settings_flags(serve)
    chat = sub.add_parser("chat", help="talk to an NPC in the terminal (tokens print as they stream)")
    chat.add_argument("--npc", required=True, help="persona id, e.g. tavern_keeper")
    chat.add_argument("--conversation", default="terminal", help="conversation id (default: terminal)")
    chat.add_argument("--target", default="127.0.0.1:50051", help="server gRPC address (default: 127.0.0.1:50051)")
    chat.add_argument("--api-key", default=os.environ.get("NPCSERVER_API_KEY"), help="API key, if the server has one")
    chat.add_argument("--preset", help="sampling preset for every line (switch with /preset NAME in the chat)")
    chat.add_argument("--temperature", type=float, help="sampling temperature, 0 to 2 (default: the preset's)")
    chat.add_argument("--seed", type=int, help="random seed, for replies you can reproduce")
    hash_key = sub.add_parser(
        "hash-key",
        help="hash an API key for the keys file (api_keys_file)",
        description="Reads a key from stdin (or makes one with --generate) and prints a [[keys]] entry for the keys "
        "file. The key itself never goes into the file.",
    )
    hash_key.add_argument("--name", required=True, help="the key's name (shown in logs and errors, e.g. game-client)")
    hash_key.add_argument("--role", required=True, choices=["player", "designer", "admin"], help="what the key may do")
    hash_key.add_argument(
        "--generate", action="store_true", help="make a random key and print it on stderr (once: keep it safe)"
    )
    return parser


def _hash_key(args: argparse.Namespace) -> int:
    import getpass

    from npcserver.service.auth import hash_key, key_id, new_key

    if args.generate:
        key = new_key()
        print(f"npcserver: the new {args.role} key {args.name!r} (shown once): {key}", file=sys.stderr)
    elif sys.stdin.isatty():
        key = getpass.getpass(f"key for {args.name!r}: ")
    else:
        key = sys.stdin.readline().rstrip("\r\n")
    if not key.strip():
        print("npcserver: the key is empty; type one, pipe one in, or use --generate", file=sys.stderr)
        return 2
    # JSON strings are valid TOML basic strings.
    print(f"[[keys]]\nname = {json.dumps(args.name)}\nrole = {json.dumps(args.role)}")
    if key_id(key) is not None:
        print(f"id = {json.dumps(key_id(key))}  # public: lets the server skip the hash of every other entry")
    print(f"hash = {json.dumps(hash_key(key))}")
    return 0


def _settings_from(args: argparse.Namespace) -> Settings:
    if args.config:
        os.environ[CONFIG_ENV] = args.config
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    if isinstance(values.get("cors_origins"), str):
        values["cors_origins"] = [v.strip() for v in values["cors_origins"].split(",") if v.strip()]
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = _settings_from(args)
        except Exception as exc:  # pydantic's ValidationError lists every bad setting
            print(f"npcserver: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        from npcserver.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format)
        if "api_key" in vars(args):
            logging.getLogger("npcserver").warning(
                "--api-key is visible to every user of this machine in the process list; "
                "set NPCSERVER_API_KEY or use api_keys_file instead"
            )
        from npcserver.server import serve

        return asyncio.run(serve(settings))
    if args.command == "chat":
        from npcserver.chat_repl import run_chat

        # Only the options given: the rest fall back to the persona's preset and the server's defaults.
        options = {k: getattr(args, k) for k in ("preset", "temperature", "seed") if getattr(args, k) is not None}
        return run_chat(args.target, args.npc, args.conversation, api_key=args.api_key, **options)
    if args.command == "hash-key":
        return _hash_key(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
