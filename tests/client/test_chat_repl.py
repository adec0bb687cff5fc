"""The terminal chat (npcserver.chat_repl.run_chat) driven through real pipes and in-process streams."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from npcserver.chat_repl import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE, run_chat
from npcserver.client import NpcClient

REPO = Path(__file__).resolve().parents[2]


def _chat_process(target: str, npc: str, conversation: str, **overrides: Any) -> subprocess.Popen[str]:
    code = (
        "import sys; from npcserver.chat_repl import run_chat; "
        f"sys.exit(run_chat({target!r}, {npc!r}, {conversation!r}, **{overrides!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-u", "-c", code],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_npcserver_chat_streams_a_reply_and_shows_history(
    live_server: Any, npc: NpcClient, conversation_id: str
) -> None:
    # The command a player types: `npcserver chat --npc tavern_keeper ...`, with its stdin and stdout piped.
    cli = ["-m", "npcserver", "chat", "--npc", "tavern_keeper", "--conversation", conversation_id]
    proc = subprocess.Popen(
        [sys.executable, *cli, "--target", live_server.grpc_target],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate("What's on the menu?\n/history\n/quit\n", timeout=120)
    assert proc.returncode == EXIT_OK, err
    turns = npc.history("tavern_keeper", conversation_id).turns
    assert len(turns) == 1
    greta = npc.get_persona("tavern_keeper").display_name
    assert f"Talking to {greta} (tavern_keeper)" in out
    assert f"{greta}: {turns[0].npc_line}\n" in out  # the streamed reply, then the same line from /history
    assert out.count(turns[0].npc_line) >= 2
    assert "What's on the menu?" in out  # from /history


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(
    live_server: Any, npc: NpcClient, chronicler: str, long_question: str, conversation_id: str
) -> None:
    proc = _chat_process(live_server.grpc_target, chronicler, conversation_id, max_tokens=400, temperature=0.0)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(long_question + "\n")
    proc.stdin.flush()
    seen = ""
    while "Chronicler: " not in seen:
        char = proc.stdout.read(1)
        assert char, f"the chat ended before the reply started: {seen!r}"
        seen += char
    seen += proc.stdout.read(1)  # the first streamed character: the NPC is speaking
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    out, err = proc.communicate("/history\n/quit\n", timeout=60)
    out = seen + out
    assert proc.returncode == EXIT_OK, err
    assert "[stopped]" in out
    assert "(no stored turns)" in out
    assert npc.history(chronicler, conversation_id).turns == ()


def test_reset_command_forgets_the_conversation(live_server: Any, npc: NpcClient, conversation_id: str) -> None:
    out = io.StringIO()
    code = run_chat(
        live_server.grpc_target,
        "tavern_keeper",
        conversation_id,
        stdin=io.StringIO("Evening.\n/reset\n/history\n"),  # ends without /quit: end of input quits too
        stdout=out,
        stderr=io.StringIO(),
        max_tokens=12,
    )
    assert code == EXIT_OK
    assert "(forgot 1 turn)" in out.getvalue()
    assert "(no stored turns)" in out.getvalue()
    assert npc.history("tavern_keeper", conversation_id).turns == ()


def test_unknown_persona_is_a_clear_error(live_server: Any) -> None:
    err = io.StringIO()
    code = run_chat(
        live_server.grpc_target, "nobody_at_all", "c1", stdin=io.StringIO(), stdout=io.StringIO(), stderr=err
    )
    assert code == EXIT_ERROR
    assert "no persona 'nobody_at_all'" in err.getvalue()
    assert "tavern_keeper" in err.getvalue()  # the known personas are listed


def test_server_down_is_a_clear_error(closed_port_target: str) -> None:
    target = closed_port_target
    err = io.StringIO()
    code = run_chat(
        target, "tavern_keeper", "c1", ready_timeout=1.0, stdin=io.StringIO(), stdout=io.StringIO(), stderr=err
    )
    assert code == EXIT_UNAVAILABLE
    assert target in err.getvalue()
    assert "npcserver serve" in err.getvalue()


def test_chat_takes_preset_temperature_and_seed_switches_preset_and_inspects(
    live_server: Any, npc: NpcClient, conversation_id: str
) -> None:
    cli = ["-m", "npcserver", "chat", "--npc", "tavern_keeper", "--conversation", conversation_id]
    options = ["--preset", "factual", "--temperature", "0.25", "--seed", "42"]
    proc = subprocess.Popen(
        [sys.executable, *cli, "--target", live_server.grpc_target, *options],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    script = "/inspect Any rooms free?\n/preset storytelling\n/preset loud\n/inspect\nHello.\n/preset\n/quit\n"
    out, err = proc.communicate(script, timeout=120)
    assert proc.returncode == EXIT_OK, err
    first, second = out.split("(prompt for ")[1:3]
    # The flags reach the request: the temperature and seed are the request's, the rest the named preset's.
    assert "temperature=0.25 (request)" in first and "seed=42 (request)" in first
    assert "top_p=" in first and "(preset factual)" in first
    assert "player_line" in first and "Any rooms free?" in first
    assert "(preset storytelling from now on)" in out
    assert "(no preset 'loud'; choose one of: " in out
    assert "(preset storytelling)" in second and "(preset factual)" not in second
    assert "in use: storytelling" in out
    turns = npc.history("tavern_keeper", conversation_id).turns
    assert [t.player_line for t in turns] == ["Hello."]  # /inspect stored nothing; the line was talked
