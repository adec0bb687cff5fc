extends NpcTestCase
## NpcDialogue, NpcClient and NpcNarrator against the real npcserver (real model) over the web
## HTTPClient, plus a refused port and a server that never answers (both set up by pytest).

const TAVERN := "tavern_keeper"
const SHIP := "ship_ai"


## The reply streams as several delta signals, then one line_finished whose
## text equals the deltas joined and the awaited NpcLine's text; the narrator types the same text.
func test_deltas_stream_before_the_line_finishes() -> void:
	var npc := make_dialogue(TAVERN, "stream")
	var recorder := Recorder.new(npc)
	var label := RichTextLabel.new()
	add_child(label)
	var narrator := NpcNarrator.new()
	narrator.label = label
	narrator.characters_per_second = 400.0
	add_child(narrator)
	narrator.dialogue = npc
	var line: NpcLine = await npc.say("Good evening. What's on the menu?")
	if not check(line.ok, "the line completed: %s" % line.error_message):
		return
	var deltas := recorder.named("delta")
	check(deltas.size() >= 2, "several deltas arrived (%d)" % deltas.size())
	var names := recorder.names()
	check_eq(names[0], "started", "line_started comes first")
	check_eq(names[-1], "finished", "line_finished comes last")
	check_eq(names.count("finished"), 1, "one line_finished")
	check_eq(line.text, recorder.delta_text(), "awaited text == concatenated deltas")
	check_eq(recorder.named("finished")[0][1], line.text, "line_finished text == awaited text")
	check(recorder.named("finished")[0][2].is_empty(), "no structured data for a free-text persona")
	check(not line.structured, "free text is not structured")
	check_eq(line.delta_count, deltas.size(), "NpcLine counts the deltas")
	check(line.completion_tokens > 0, "usage reported (%d tokens)" % line.completion_tokens)
	var waited := 0.0
	while narrator.is_typing() and waited < 10.0:
		await get_tree().process_frame
		waited += get_process_delta_time()
	check(not narrator.is_typing(), "the narrator finished typing")
	check_eq(label.get_parsed_text(), line.text, "the narrator typed the whole line")
	check_eq(narrator.get_text(), line.text, "the narrator's text")
	check_eq(label.visible_characters, -1, "all characters visible")
	label.queue_free()
	narrator.queue_free()


## A long reply (pytest's persona forces one) reaches the game piece by piece over many frames,
## not in one lump at the end: the body is read as it arrives.
func test_a_long_reply_streams_over_many_frames() -> void:
	var npc := make_dialogue(str(config["long_persona"]), "long")
	npc.max_tokens = 80
	var frames := {}
	var first_ms := [0]
	npc.delta_received.connect(
		func(_t: String) -> void:
			frames[Engine.get_process_frames()] = true
			if first_ms[0] == 0:
				first_ms[0] = Time.get_ticks_msec()
	)
	var finished_ms := [0]
	npc.line_finished.connect(
		func(_t: String, _d: Dictionary) -> void: finished_ms[0] = Time.get_ticks_msec()
	)
	var line: NpcLine = await npc.say("Tell the story of the storm.")
	check(line.ok, "the line completed: %s" % line.error_message)
	check(line.delta_count >= 40, "many deltas (%d)" % line.delta_count)
	check(frames.size() >= 4, "deltas arrived in %d different frames" % frames.size())
	var spread: int = finished_ms[0] - first_ms[0]
	check(spread >= 200, "the first delta came %d ms before the line finished" % spread)


## A persona with a response schema yields its payload as a Dictionary.
func test_structured_persona_yields_a_dictionary() -> void:
	var npc := make_dialogue(SHIP, "structured")
	npc.max_tokens = 200  # room for the whole JSON object, so it is never cut off
	var recorder := Recorder.new(npc)
	var line: NpcLine = await npc.say("Status report.")
	if not check(line.ok, "the line completed: %s" % line.error_message):
		return
	check(line.structured, "a schema applied")
	check_eq(line.structured_error, "", "the reply matched the schema")
	check(line.data is Dictionary and line.data.has("line"), "data has line: %s" % line.data)
	check(str(line.data.get("emotion")) in ["calm", "concerned", "pleased", "alarmed"], "emotion")
	check(line.data.has("action"), "data has action")
	var finished := recorder.named("finished")
	check(finished.size() == 1 and finished[0][2] == line.data, "line_finished carries the data")
	check(recorder.named("delta").size() >= 2, "structured replies stream too")


## An unknown persona fails with NOT_FOUND on the failed signal, the NpcLine and the client.
func test_unknown_persona_fails_with_not_found() -> void:
	var npc := make_dialogue("no_such_persona", "missing")
	var recorder := Recorder.new(npc)
	var client_failures: Array = []
	npc.client.call_failed.connect(
		func(path: String, code: int, _m: String) -> void: client_failures.append([path, code])
	)
	var line: NpcLine = await npc.say("Hello?")
	check(not line.ok, "the line failed")
	check_eq(line.status_code, NpcGrpcWeb.Status.NOT_FOUND, "status")
	check(
		"no_such_persona" in line.error_message, "message names the persona: " + line.error_message
	)
	var failed := recorder.named("failed")
	check(failed.size() == 1 and failed[0][1] == NpcGrpcWeb.Status.NOT_FOUND, "failed signal")
	check(recorder.named("finished").is_empty(), "no line_finished")
	await get_tree().process_frame
	check_eq(client_failures.size(), 1, "NpcClient.call_failed fired")


## cancel() mid-stream ends the line at once: nothing more arrives, the server stops generating
## (the next line is not queued behind it) and stores no turn. The persona (made by pytest) has a
## schema that forces a reply of hundreds of tokens, so the cancel always lands mid-stream.
func test_cancel_stops_the_stream() -> void:
	var npc := make_dialogue(str(config["long_persona"]), "cancel")
	var recorder := Recorder.new(npc)
	var deltas_at_cancel := [0]
	npc.delta_received.connect(
		func(_t: String) -> void:
			if recorder.named("delta").size() == 3:
				deltas_at_cancel[0] = 3
				npc.cancel()
	)
	var line: NpcLine = await npc.say("Tell the whole story of the storm.")
	check_eq(deltas_at_cancel[0], 3, "cancelled on the third delta")
	check(line.cancelled, "the line reports cancelled")
	check_eq(line.status_code, NpcGrpcWeb.Status.CANCELLED, "status")
	check(not npc.is_talking(), "not talking any more")
	check_eq(recorder.named("delta").size(), 3, "no delta after the cancel")
	check_eq(recorder.named("cancelled").size(), 1, "line_cancelled fired")
	check(recorder.named("finished").is_empty(), "no line_finished")
	check(recorder.named("failed").is_empty(), "a cancel is not a failure")
	# The server runs one sequence at a time: a line still generating (about 20 s when not stopped)
	# would hold this one in the queue. Chromium may keep an aborted HTTP/1.1 response open for up
	# to 5 s to drain it for reuse, so the server can hear of the cancel up to 5 s late on the web.
	var next := make_dialogue(TAVERN, "after-cancel")
	next.max_tokens = 4
	var quick: NpcLine = await next.say("Hello.")
	check(quick.ok, "the next line completed: %s" % quick.error_message)
	print("queue wait after cancel: %.0f ms" % quick.queue_ms)
	check(
		quick.queue_ms < 8000.0,
		"the cancelled line stopped (next line queued %.0f ms)" % quick.queue_ms
	)
	await wait_seconds(0.5)
	check_eq(recorder.named("delta").size(), 3, "still no deltas after the cancel")
	var history := await npc.get_history()
	check_eq(history.size(), 0, "the server stored no turn for the cancelled line")
	print("CANCELLED_CONVERSATION %s %s" % [npc.persona_id, npc.conversation_id])
	npc.max_tokens = 8
	var again: NpcLine = await npc.say("The storm clears.")
	check(again.ok, "the same node talks again after a cancel: %s" % again.error_message)


## History, export (Dictionary and bytes), reset and import restore a conversation exactly.
func test_export_then_import_restores_the_conversation() -> void:
	var npc := make_dialogue(TAVERN, "save")
	npc.max_tokens = 16
	var first: NpcLine = await npc.say("Is there a room for the night?")
	var second: NpcLine = await npc.say("How much for the stew?")
	if not check(first.ok and second.ok, "both lines completed"):
		return
	var history := await npc.get_history()
	check_eq(history.size(), 2, "two turns stored")
	check_eq(history[0]["player_line"], "Is there a room for the night?", "first player line")
	check_eq(history[1]["npc_line"], second.text, "second reply")
	var saved := await npc.export_conversation()
	var saved_bytes := await npc.export_conversation_bytes()
	check_eq(saved.get("turns", []).size(), 2, "the export holds both turns")
	check(saved_bytes.size() > 20, "the byte export is not empty")
	# A save file usually goes through JSON, which turns ints into floats.
	var from_save: Variant = JSON.parse_string(JSON.stringify(saved))
	check_eq(await npc.reset(), 2, "reset forgot two turns")
	check_eq((await npc.get_history()).size(), 0, "history empty after reset")
	check_eq(await npc.import_conversation(from_save), 2, "imported two turns from the Dictionary")
	check_eq(await npc.get_history(), history, "the Dictionary import restored the history")
	check_eq(await npc.reset(), 2, "reset again")
	check_eq(await npc.import_conversation(saved_bytes), 2, "imported two turns from bytes")
	check_eq(await npc.get_history(), history, "the byte import restored the history")
	var other := make_dialogue(TAVERN, "save-copy")
	check_eq(
		await other.import_conversation(saved), 2, "an export imports into another conversation"
	)
	check_eq((await other.get_history()).size(), 2, "the copy has the turns")
	check_eq(await npc.import_conversation("not a save"), -1, "a bad save is rejected")


## Game state rides on a line; memories and the summary are recorded, listed, replaced, and come
## back with an exported save after a reset.
func test_game_state_memories_and_summary() -> void:
	var npc := make_dialogue(TAVERN, "knowledge")
	npc.max_tokens = 8
	npc.game_state = PackedStringArray(["it is night", "the player carries the silver key"])
	var line: NpcLine = await npc.say("Evening!")
	check(line.ok, "a line with game state completed: %s" % line.error_message)
	npc.game_state = PackedStringArray()
	var ring := await npc.add_memory("The player returned the ring.", 8)
	check_eq(ring.get("importance"), 8, "the memory keeps its importance")
	check(int(ring.get("id", 0)) > 0, "the memory has an id")
	await npc.add_memory("The player likes cider.")
	var memories := await npc.list_memories()
	check_eq(memories.size(), 2, "two memories listed")
	check_eq(memories[0]["text"], "The player returned the ring.", "oldest first")
	check_eq(await npc.get_summary(), "", "no summary yet")
	check(await npc.set_summary("The player is a regular."), "the game sets the summary")
	check_eq(await npc.get_summary(), "The player is a regular.", "the summary reads back")
	var saved := await npc.export_conversation()
	var from_save: Variant = JSON.parse_string(JSON.stringify(saved))
	await npc.reset()
	check_eq((await npc.list_memories()).size(), 0, "reset forgot the memories")
	check_eq(await npc.get_summary(), "", "reset forgot the summary")
	check_eq(await npc.import_conversation(from_save), 1, "the save imports")
	check_eq(await npc.get_summary(), "The player is a regular.", "the save restored the summary")
	check_eq((await npc.list_memories()).size(), 2, "the save restored the memories")
	check(await npc.delete_memory(int(ring["id"])) == false, "an id from before the import is gone")
	var bad := await npc.add_memory("", 5)
	check(bad.is_empty(), "an empty memory is refused")


## Every line gets its own request id; retry() sends a line again with its id, and a line the
## server already stored comes back replayed (same text), not stored a second time.
func test_a_retried_line_is_replayed_not_stored_twice() -> void:
	var npc := make_dialogue(TAVERN, "retry")
	npc.max_tokens = 16
	var first: NpcLine = await npc.say("Is the stew fresh?")
	var second: NpcLine = await npc.say("And the bread?")
	if not check(first.ok and second.ok, "both lines completed"):
		return
	check_eq(first.request_id.length(), 32, "a request id: %s" % first.request_id)
	check(first.request_id != second.request_id, "each line has its own request id")
	check(not first.replayed and not second.replayed, "new lines are generated")
	var history := await npc.get_history()
	# An empty reply (or a call that did not validate) is not stored: then there is nothing to replay.
	var stored: bool = history.size() > 0 and history[-1]["player_line"] == "And the bread?"
	var again: NpcLine = await npc.retry(second)
	if not check(again.ok, "the retry completed: %s" % again.error_message):
		return
	check_eq(again.request_id, second.request_id, "the retry kept the request id")
	check_eq(again.replayed, stored, "a stored line is replayed")
	if stored:
		check_eq(again.text, second.text, "the replay is the stored reply")
		check_eq((await npc.get_history()).size(), history.size(), "nothing stored twice")


## Preset, temperature, max_tokens and seed overrides reach the server; bad ones fail precisely.
func test_overrides_and_server_errors() -> void:
	var npc := make_dialogue(TAVERN, "overrides")
	npc.preset = "factual"
	npc.temperature = 0.0
	npc.max_tokens = 6
	npc.seed_value = 7
	var line: NpcLine = await npc.say("Hello.")
	check(line.ok, "the overridden line completed: %s" % line.error_message)
	check(line.completion_tokens <= 6, "max_tokens respected (%d)" % line.completion_tokens)
	npc.preset = "no_such_preset"
	var bad_preset: NpcLine = await npc.say("Hello.")
	check_eq(bad_preset.status_code, NpcGrpcWeb.Status.NOT_FOUND, "unknown preset")
	check("no_such_preset" in bad_preset.error_message, "message: " + bad_preset.error_message)
	npc.preset = ""
	npc.temperature = 5.0
	var bad_temperature: NpcLine = await npc.say("Hello.")
	check_eq(bad_temperature.status_code, NpcGrpcWeb.Status.INVALID_ARGUMENT, "temperature 5")
	check(
		"temperature" in bad_temperature.error_message, "message: " + bad_temperature.error_message
	)
	var fresh := make_dialogue(TAVERN, "never-used")
	check_eq((await fresh.get_history()).size(), 0, "a new conversation has no history")
	check_eq(await fresh.reset(), 0, "resetting it forgets nothing")


## A port nobody listens on gives UNAVAILABLE with a message naming the server.
func test_refused_connection_fails_clearly() -> void:
	var client := make_client("refused_port")
	var npc := make_dialogue(TAVERN, "refused", client)
	var recorder := Recorder.new(npc)
	var line: NpcLine = await npc.say("Anyone there?")
	check_eq(line.status_code, NpcGrpcWeb.Status.UNAVAILABLE, "status")
	var port := str(int(config["refused_port"]))
	check(port in line.error_message, "message names the port: %s" % line.error_message)
	check_eq(recorder.named("failed").size(), 1, "failed signal")


## A server that accepts the request and never answers hits the idle timeout; the API key is sent.
func test_timeout_fails_with_deadline_exceeded() -> void:
	var client := make_client("stall_port")
	client.idle_timeout_s = 1.5
	client.api_key = str(config["api_key"])
	var npc := make_dialogue(TAVERN, "stall", client)
	var recorder := Recorder.new(npc)
	var started := Time.get_ticks_msec()
	var line: NpcLine = await npc.say("Hello?")
	var took := (Time.get_ticks_msec() - started) / 1000.0
	check_eq(line.status_code, NpcGrpcWeb.Status.DEADLINE_EXCEEDED, "status")
	check("timed out" in line.error_message, "message: " + line.error_message)
	check(took >= 1.4 and took < 10.0, "gave up after the idle timeout (%.1f s)" % took)
	check_eq(recorder.named("failed").size(), 1, "failed signal")


## The tavern keeper's own give_item (fire-and-forget), forced by a NAMED choice: the call
## arrives as action_called with arguments from the schema's enum, the handler runs with the same
## arguments, and the line ends normally with nothing awaited.
func test_action_named_persona_action_runs_its_handler() -> void:
	var npc := make_dialogue(TAVERN, "give-item")
	npc.max_tokens = 60
	var order: Array[String] = []
	var handled: Array[Dictionary] = []
	npc.delta_received.connect(func(_t: String) -> void: order.append("delta"))
	npc.action_called.connect(
		func(action_name: String, arguments: Dictionary, call_id: String) -> void:
			order.append("action %s %s %s" % [action_name, JSON.stringify(arguments), call_id])
	)
	npc.handle_action("give_item", func(arguments: Dictionary) -> void: handled.append(arguments))
	npc.action_choice = NpcDialogue.ActionChoice.NAMED
	npc.action_choice_name = "give_item"
	var line: NpcLine = await npc.say("Here are three silver. I'll take the room.")
	if not check(line.ok, "the line completed: %s" % line.error_message):
		return
	if not check_eq(line.action_calls.size(), 1, "one action call"):
		return
	var called: Dictionary = line.action_calls[0]
	check_eq(called["name"], "give_item", "the named action was called")
	check(
		called["arguments"].get("item") in ["room key", "mutton stew", "brown ale"],
		"the item is one of the schema's enum: %s" % called["arguments"]
	)
	check(str(called["id"]).begins_with("call_"), "the call has an id: %s" % called["id"])
	check_eq(handled.size(), 1, "the handler ran once")
	check(handled.size() == 1 and handled[0] == called["arguments"], "with the arguments")
	var actions := order.filter(func(e: String) -> bool: return e.begins_with("action "))
	check_eq(actions.size(), 1, "one action_called signal: %s" % [order])
	check_eq(
		line.finish_reason,
		NpcProto.FinishReason.FINISH_REASON_STOP,
		"fire-and-forget ends with STOP"
	)
	check(not line.awaiting_results, "nothing is awaited")
	check(line.follow_up == null, "no follow-up line")
	var history: Array[Dictionary] = await npc.get_history()
	if check_eq(history.size(), 1, "one stored turn"):
		var stored: Array = history[0].get("action_calls", [])
		check_eq(stored.size(), 1, "the stored turn keeps the call")
		if stored.size() == 1:
			check_eq(stored[0]["id"], called["id"], "the stored call's id")


## An action registered by the game that awaits its result: the line ends with FINISH_REASON_ACTION,
## the Callable's return value goes back with the next Talk (no player text), and the NPC's
## follow-up line streams; the server stores the call and the result.
func test_action_awaited_result_round_trips() -> void:
	var npc := make_dialogue(TAVERN, "open-gate")
	npc.max_tokens = 40
	var gates: Array[String] = []
	var sent: Array[Dictionary] = []
	npc.action_results_sent.connect(func(results: Dictionary) -> void: sent.append(results))
	var registered := npc.register_action(
		"open_gate",
		"Opens a gate of the town for the traveler.",
		func(arguments: Dictionary) -> String:
			gates.append(arguments["gate"])
			await get_tree().process_frame  # a coroutine handler is awaited
			return "The %s gate is open." % arguments["gate"],
		{"gate": ["north", "south"]},
		true
	)
	check(registered, "open_gate registered")
	npc.action_choice = NpcDialogue.ActionChoice.NAMED
	npc.action_choice_name = "open_gate"
	var line: NpcLine = await npc.say("Open the gate for me, please.")
	if not check(line.ok, "the line completed: %s" % line.error_message):
		return
	check_eq(
		line.finish_reason,
		NpcProto.FinishReason.FINISH_REASON_ACTION,
		"an awaited call ends the line with FINISH_REASON_ACTION"
	)
	if not check_eq(line.action_calls.size(), 1, "one call"):
		return
	var call_id: String = line.action_calls[0]["id"]
	check_eq(gates.size(), 1, "the Callable ran once")
	var gate := gates[0] if gates.size() == 1 else "?"
	check_eq(sent.size(), 1, "action_results_sent once")
	check(
		sent.size() == 1 and sent[0] == {call_id: "The %s gate is open." % gate},
		"the Callable's result was sent: %s" % [sent]
	)
	if not check(line.follow_up != null, "a follow-up line came"):
		return
	var follow := line.follow_up
	check(follow.ok, "the follow-up completed: %s" % follow.error_message)
	check_eq(follow.player_text, "", "the follow-up carries no player text")
	check_eq(follow.action_results, {call_id: "The %s gate is open." % gate}, "its results")
	check(not follow.text.strip_edges().is_empty(), "the NPC spoke about it: %s" % follow.text)
	check(line.last() == follow or follow.follow_up != null, "last() walks the chain")
	var history: Array[Dictionary] = await npc.get_history()
	if check(history.size() >= 2, "two stored turns (%d)" % history.size()):
		check_eq(history[0]["action_calls"][0]["id"], call_id, "turn 1 keeps the call")
		check_eq(history[1]["action_results"][0]["call_id"], call_id, "turn 2 keeps the result")
		check_eq(history[1]["player_line"], "", "turn 2 has no player line")


## Without a Callable the game answers itself: the line waits with awaiting_results, and
## send_action_results streams the follow-up.
func test_action_result_sent_by_the_game() -> void:
	var npc := make_dialogue(TAVERN, "manual-result")
	npc.max_tokens = 30
	npc.register_action("ring_bell", "Rings the bell over the bar.", Callable(), {}, true)
	npc.action_choice = NpcDialogue.ActionChoice.NAMED
	npc.action_choice_name = "ring_bell"
	var called: Array[String] = []
	npc.action_called.connect(
		func(action_name: String, _a: Dictionary, _id: String) -> void: called.append(action_name)
	)
	var line: NpcLine = await npc.say("Ring the bell, Greta!")
	if not check(line.ok, "the line completed: %s" % line.error_message):
		return
	if not check_eq(line.action_calls.size(), 1, "one call"):
		return
	var call_id: String = line.action_calls[0]["id"]
	check_eq(called, ["ring_bell"] as Array[String], "action_called once")
	check_eq(line.action_calls[0]["arguments"], {}, "no arguments")
	check(line.awaiting_results, "the line awaits its result")
	check(line.follow_up == null, "no follow-up without a Callable")
	var follow: NpcLine = await npc.send_action_results({call_id: {"rang": true}})
	check(follow.ok, "the follow-up completed: %s" % follow.error_message)
	check_eq(follow.action_results, {call_id: '{"rang":true}'}, "a value is sent as JSON")
	check(not line.awaiting_results, "no longer awaiting")
	check(not follow.text.strip_edges().is_empty(), "the NPC spoke about it: %s" % follow.text)


## Bad actions are refused with a message naming what to fix: locally for a name that is not an
## identifier, by the server for a NAMED choice that is not declared (nothing is stored).
func test_action_bad_input_is_refused() -> void:
	var npc := make_dialogue(TAVERN, "bad-actions")
	var recorder := Recorder.new(npc)
	check(not npc.register_action("open gate", "Opens it."), "a name with a space is refused")
	check(
		not npc.register_action("x", "X.", Callable(), {"n": "int"}), "an unknown type is refused"
	)
	var failures := recorder.named("failed")
	if check_eq(failures.size(), 2, "both reported"):
		check("open gate" in failures[0][2], "the message names the action: %s" % failures[0][2])
		check("TYPE_*" in failures[1][2], "the message says what a parameter needs")
	npc.action_choice = NpcDialogue.ActionChoice.NAMED
	npc.action_choice_name = "fly_away"
	var line: NpcLine = await npc.say("Hello?")
	check_eq(line.status_code, NpcGrpcWeb.Status.INVALID_ARGUMENT, "undeclared NAMED choice")
	check("fly_away" in line.error_message, "the error names it: %s" % line.error_message)
	var history: Array[Dictionary] = await npc.get_history()
	check_eq(history.size(), 0, "nothing stored")


## The schema register_action builds from argument types.
func test_action_schema_from_types() -> void:
	var schema := NpcDialogue.action_schema(
		{"item": ["key", "ale"], "count": TYPE_INT, "note": {"type": "string", "maxLength": 20}}
	)
	check_eq(schema["type"], "object", "an object schema")
	check_eq(schema["properties"]["item"], {"enum": ["key", "ale"]}, "an Array is an enum")
	check_eq(schema["properties"]["count"], {"type": "integer"}, "TYPE_INT is integer")
	check_eq(schema["properties"]["note"]["maxLength"], 20, "a Dictionary is a schema")
	check_eq(schema["required"], ["item", "count", "note"], "every argument is required")
	check_eq(schema["additionalProperties"], false, "no other arguments")
	var full := {"type": "object", "properties": {}}
	check_eq(NpcDialogue.action_schema(full), full, "a schema passes through")
	check_eq(NpcDialogue.action_schema({}), {}, "no parameters, no schema")
