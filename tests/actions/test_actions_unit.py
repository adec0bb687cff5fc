"""Unit tests of core.actions: the streamed split around a call, grammar rule renaming, stored-turn encoding, and
the checks on declared actions and results (the live tests cover the model and the doors)."""

from __future__ import annotations

import asyncio

import pytest

from npcserver.core import actions as acts
from npcserver.core.types import Action, ActionCall, ActionChoice, ActionResult
from npcserver.errors import InvalidArgument

CALL = '<action>{"name": "give_item", "arguments": {"item": "room key"}}</action>'


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_cutter_streams_the_line_and_holds_the_call_whatever_the_chunking(size: int) -> None:
    reply = "Fair enough. Here." + CALL + " Top of the stairs."
    cut = acts.CallCutter()
    spoken = "".join(cut.feed(reply[i : i + size]) for i in range(0, len(reply), size))
    assert spoken == "Fair enough. Here. Top of the stairs."
    assert cut.raw == CALL and cut.done and cut.before == "Fair enough. Here."


def test_prefixed_renames_rules_not_literals() -> None:
    grammar = 'root ::= "{" space item "}"\nitem ::= "\\"root\\"" | [a-z]+\nspace ::= " "?'
    out = acts._prefixed(grammar, "a0-")
    assert 'a0-root ::= "{" a0-space a0-item "}"' in out
    assert '"\\"root\\""' in out and "a0-space ::=" in out


def test_stored_turn_lines_round_trip_and_render_as_generated() -> None:
    call = ActionCall("call_1", "give_item", '{"item": "room key"}', await_result=True, at=5)
    stored = acts.encode_npc_line("Here. Take it.", (call,))
    line, calls = acts.decode_npc_line(stored)
    assert line == "Here. Take it." and calls == (
        ActionCall("call_1", "give_item", '{"item": "room key"}', 0, True, 5),
    )
    assert acts.render_npc_line(stored) == "Here." + CALL + " Take it."
    results = (ActionResult("call_1", "done"),)
    player = acts.encode_player_line("", results)
    assert acts.decode_player_line(player) == ("", results)
    assert acts.render_player_line(player, stored) == "[give_item result: done]"
    assert acts.decode_player_line("plain text") == ("plain text", ())


def test_declared_actions_are_checked() -> None:
    acts.check_actions((Action("give_item", parameters={}), Action("_wave2")))
    for bad, fragment in [
        ((Action("a"), Action("a")), "declared twice"),
        ((Action("2fast"),), "is not an identifier"),
        ((Action(""),), "must not be empty"),
        ((Action("x", parameters={"type": "string"}),), "JSON Schema of an object"),
    ]:
        with pytest.raises(InvalidArgument, match=fragment):
            acts.check_actions(bad)
    with pytest.raises(InvalidArgument, match="declared twice"):
        acts.check_actions((Action("a"),), also=(Action("a"),))
    with pytest.raises(InvalidArgument, match="'fly', which is not declared"):
        acts.check_choice(ActionChoice("named", "fly"), (Action("a"),))


def test_results_must_answer_the_pending_calls() -> None:
    pending = (ActionCall("call_1", "open_gate", "{}", await_result=True),)
    acts.check_results((ActionResult("call_1", "open"),), "", pending)
    for results, text, calls, fragment in [
        ((ActionResult("call_1", "open"),), "hi", pending, "text must be empty"),
        ((ActionResult("call_9", "open"),), "", pending, "'call_9' is not a pending call"),
        ((ActionResult("call_1", "open"),), "", (), "no action call is pending"),
        ((), "", pending, "no result for the pending call"),
    ]:
        with pytest.raises(InvalidArgument, match=fragment):
            acts.check_results(results, text, calls)


def test_required_grammar_puts_the_call_first_and_none_forbids_it() -> None:
    action = Action("give_item", parameters={"type": "object", "properties": {"item": {"enum": ["key"]}}})
    required = asyncio.run(acts.plan((action,), ActionChoice("required")))
    assert required is not None and required.grammar.startswith('root ::= " "? call')
    assert '"<action>"' in required.grammar and "give_item" in required.grammar
    none = asyncio.run(acts.plan((action,), ActionChoice("none")))
    assert none is not None and "<action>" not in none.grammar and "[^\\n<]+" in none.grammar
    assert asyncio.run(acts.plan((), ActionChoice("auto"))) is None
