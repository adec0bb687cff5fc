"""A terminal chat with one NPC: the player's lines from stdin, the NPC's reply printed token by token.

``npcserver chat --npc <id> [--preset NAME] [--temperature T] [--seed N]`` calls :func:`run_chat`. Commands:
``/history``, ``/reset``, ``/preset NAME`` (``/preset`` alone lists them), ``/inspect`` (the prompt inspector: what
the next line would send, needs a designer key), ``/help``, ``/quit``.
Ctrl-C while the NPC speaks stops the reply (the server then stores no turn); Ctrl-C at the prompt quits.
"""

from __future__ import annotations

import sys
from typing import TextIO, Unpack

from npcserver.client import (
    NpcClient,
    NpcClientError,
    NpcNotFound,
    NpcServerUnavailable,
    Persona,
    TalkOptions,
)

#: Exit codes: 0 when the player quits, 1 for a request the server refused (e.g. unknown persona), 2 when no
#: server answers, 130 for Ctrl-C while connecting.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2
EXIT_INTERRUPTED = 130

HELP = (
    "Commands: /history shows the stored turns, /reset forgets them, /preset NAME switches the sampling preset "
    "(/preset lists them), /inspect [LINE] shows the prompt a line would send, /quit leaves. Ctrl-C stops a reply."
)


class _Repl:
    def __init__(
        self,
        client: NpcClient,
        persona: Persona,
        conversation: str,
        overrides: TalkOptions,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.client = client
        self.persona = persona
        self.conversation = conversation
        self.overrides = overrides
        self.stdin = stdin
        self.out = stdout
        self.err = stderr
        self.npc_name = persona.display_name or persona.id
        self.player_name = overrides.get("player_name") or persona.player_name or "Player"

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def loop(self) -> int:
        self.say(f"Talking to {self.npc_name} ({self.persona.id}), conversation '{self.conversation}'.")
        self.say(HELP)
        while True:
            self.out.write(f"{self.player_name}> ")
            self.out.flush()
            try:
                line = self.stdin.readline()
            except KeyboardInterrupt:
                self.say("")
                return EXIT_OK
            if not line:  # end of input
                self.say("")
                return EXIT_OK
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if line in ("/quit", "/exit"):
                    return EXIT_OK
                self.command(line)
                continue
            code = self.talk(line)
            if code is not None:
                return code

    def command(self, line: str) -> None:
        if line == "/history":
            turns = self.client.history(self.persona.id, self.conversation).turns
            if not turns:
                self.say("(no stored turns)")
            for turn in turns:
                self.say(f"{turn.player_name or self.player_name}: {turn.player_line}")
                self.say(f"{self.npc_name}: {turn.npc_line}")
        elif line == "/reset":
            deleted = self.client.reset(self.persona.id, self.conversation)
            self.say(f"(forgot {deleted} turn{'s' if deleted != 1 else ''})")
        elif line == "/preset" or line.startswith("/preset "):
            self.preset(line[len("/preset") :].strip())
        elif line == "/inspect" or line.startswith("/inspect "):
            self.inspect(line[len("/inspect") :].strip())
        elif line == "/help":
            self.say(HELP)
        else:
            self.say(f"unknown command {line!r}. {HELP}")

    def preset(self, name: str) -> None:
        presets = self.client.list_presets()
        names = [p.name for p in presets]
        if not name:
            current = self.overrides.get("preset") or self.persona.default_preset or "the server default"
            self.say(f"(presets: {', '.join(names)}; in use: {current})")
        elif name not in names:
            self.say(f"(no preset {name!r}; choose one of: {', '.join(names)})")
        else:
            self.overrides["preset"] = name
            self.say(f"(preset {name} from now on)")

    def inspect(self, text: str) -> None:
        """Shows what the next line (``text``, or a placeholder) would send: sections, tokens, sampling."""
        line = text or "..."
        try:
            r = self.client.render_prompt(self.persona.id, self.conversation, line, **self.overrides)
        except NpcClientError as err:
            self.err.write(f"error: {err}\n")
            return
        self.say(f"(prompt for {line!r}: {r.prompt_tokens} tokens; {len(r.left_out)} turns left out)")
        for s in r.sections:
            first = s.text.strip().splitlines()[0] if s.text.strip() else ""
            self.say(f"  {s.name:<26} {s.tokens:>5} tokens  {first[:60]}")
        params = []
        for p in r.sampling:
            value = f"{p.value:g}" if p.HasField("value") else "random"
            params.append(f"{p.name}={value} ({p.source}{' ' + p.preset if p.preset else ''})")
        self.say("  sampling: " + ", ".join(params))
        if r.grammar:
            self.say(f"  grammar from the {r.grammar_source}")

    def talk(self, text: str) -> int | None:
        """Streams one reply. Returns an exit code when the chat cannot go on, else None."""
        self.out.write(f"{self.npc_name}: ")
        self.out.flush()
        stream = self.client.stream_talk(self.persona.id, self.conversation, text, **self.overrides)
        try:
            for piece in stream:
                self.out.write(piece)
                self.out.flush()
            result = stream.result()
        except KeyboardInterrupt:
            # Cancelling tells the server to stop generating; a cancelled turn is not stored.
            stream.cancel()
            self.say(" [stopped]")
            return None
        except NpcServerUnavailable as err:
            self.say("")
            self.err.write(f"error: {err.message}\n")
            return EXIT_UNAVAILABLE
        except NpcClientError as err:
            self.say("")
            self.err.write(f"error: {err}\n")
            return None
        self.say("")
        if result.structured is not None and not result.structured.valid:
            self.err.write(f"(the reply is not valid structured output: {result.structured.error})\n")
        if result.finish_reason == "length":
            self.err.write("(the reply was cut off at max_tokens)\n")
        return None


def run_chat(
    target: str,
    npc: str,
    conversation: str,
    *,
    api_key: str | None = None,
    ready_timeout: float = 10.0,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    **overrides: Unpack[TalkOptions],
) -> int:
    """Chats with persona ``npc`` in ``conversation`` on the server at ``target`` (HOST:PORT) until /quit or EOF.

    ``overrides`` (preset, temperature, max_tokens, seed, player_name, ...) apply to every line. Returns the
    process exit code: 0 on quit, 1 when the server refuses (unknown persona), 2 when no server answers.
    """
    inp = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        with NpcClient(target, api_key=api_key, ready_timeout=ready_timeout) as client:
            try:
                persona = client.get_persona(npc)
            except NpcNotFound:
                known = ", ".join(p.id for p in client.list_personas()) or "none"
                err.write(f"error: the server at {target} has no persona {npc!r}. Known personas: {known}.\n")
                return EXIT_ERROR
            return _Repl(client, persona, conversation, overrides, inp, out, err).loop()
    except NpcServerUnavailable as exc:
        err.write(f"error: {exc.message}\n")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:  # Ctrl-C while connecting
        err.write("\n")
        return EXIT_INTERRUPTED
    except NpcClientError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_ERROR
