@icon("res://addons/npc_dialogue/icon.svg")
class_name NpcDialogue
extends Node
## One NPC's side of a conversation held by the npcserver: say a line, get the reply streamed.
##
## Put it on an NPC, set [member persona_id] (a persona on the server) and [member conversation_id]
## (your game's id for this conversation: a save slot, a player). [method say] streams the reply
## as [signal delta_received] signals, then [signal line_finished]; the same call can be awaited
## for an [NpcLine]. Failures reach [signal failed] and are printed with
## [method @GlobalScope.push_error].
## [codeblock]
## var greta := NpcDialogue.new()
## greta.persona_id = "tavern_keeper"
## add_child(greta)
## greta.delta_received.connect(func(piece: String) -> void: box.add_text(piece))
## var line: NpcLine = await greta.say("Any rooms free?")
## [/codeblock]
##
## Actions: the NPC can do things in the game. [method register_action] declares one for every
## line (name, description, a Callable, argument types or a JSON schema); [method handle_action]
## attaches a Callable to an action the persona declares. When the NPC calls one,
## [signal action_called] is emitted and the Callable runs with the arguments; for an action that
## awaits its result, its return value goes back to the server and the NPC speaks about it.
## [codeblock]
## greta.register_action("give_item", "Hand the traveler an item they paid for.",
##     func(args: Dictionary) -> String: return "the traveler now holds the " + args["item"],
##     {"item": ["room key", "mutton stew"]}, true)
## [/codeblock]

## Emitted when a line is sent, before any reply arrives.
signal line_started(player_text: String)
## Emitted for each piece of the reply as the server samples it.
signal delta_received(text: String)
## Emitted when the reply is complete. [param data] is the parsed JSON payload when the persona has
## a response schema and the reply matched it, otherwise empty.
signal line_finished(text: String, data: Dictionary)
## Emitted when a call fails. [param code] is an [enum NpcGrpcWeb.Status] (5 is NOT_FOUND).
signal failed(code: int, message: String)
## Emitted when a line is cancelled before it finished.
signal line_cancelled
## Emitted when the NPC calls an action, in the reply's order (between its deltas), before the
## action's Callable runs. [param arguments] were validated by the server against the schema.
signal action_called(action_name: String, arguments: Dictionary, call_id: String)
## Emitted when the results of awaited actions are sent back (call id to content), before the
## NPC's follow-up line streams.
signal action_results_sent(results: Dictionary)

## Which actions the NPC may or must call in a line (see [member action_choice]).
enum ActionChoice {
	AUTO,  ## Talk, call an action, or both.
	NONE,  ## Only talk.
	REQUIRED,  ## Call one of the actions.
	NAMED,  ## Call the action named in [member action_choice_name].
}

## Most follow-up lines one [method say] sends results for on its own (a model that keeps calling
## actions stops there; the last line then has [member NpcLine.awaiting_results]).
const MAX_FOLLOW_UPS := 4
## Tries of one line when the server is unreachable or busy with a race (same request id each time).
const TALK_ATTEMPTS := 3
const _NO_CLIENT := "no NpcClient: set `client` or enable the plugin (NpcServer autoload)"
const _JSON_TYPES := {
	TYPE_STRING: "string",
	TYPE_INT: "integer",
	TYPE_FLOAT: "number",
	TYPE_BOOL: "boolean",
}
const _CHOICE_MODES := {
	ActionChoice.AUTO: NpcProto.ActionChoice.Mode.MODE_AUTO,
	ActionChoice.NONE: NpcProto.ActionChoice.Mode.MODE_NONE,
	ActionChoice.REQUIRED: NpcProto.ActionChoice.Mode.MODE_REQUIRED,
	ActionChoice.NAMED: NpcProto.ActionChoice.Mode.MODE_NAMED,
}

## The persona id of this NPC on the server ("tavern_keeper").
@export var persona_id := ""
## Your game's id for this conversation (a save slot, a player id). 1 to 128 printable characters.
@export var conversation_id := "default"
## The player's name in this conversation. Empty: the persona's default.
@export var player_name := ""
## A sampling preset name (see the server's ListPresets). Empty: the persona's default preset.
@export var preset := ""
## Sampling temperature in [0, 2]. Negative: the preset's.
@export_range(-1.0, 2.0, 0.05) var temperature := -1.0
## Most tokens in a reply. 0: the persona's default.
@export_range(0, 4096) var max_tokens := 0
## Random seed for reproducible replies. Negative: random.
@export var seed_value := -1
## The client to use. Empty: the [code]NpcServer[/code] autoload.
@export var client: NpcClient
## Whether the NPC may or must call an action in its next lines (the server enforces it).
## REQUIRED and NAMED apply to the player's lines; a follow-up after action results leaves the
## choice to the server, which lets the NPC talk about them.
@export var action_choice := ActionChoice.AUTO
## The action to call when [member action_choice] is NAMED.
@export var action_choice_name := ""

## The last finished (or failed) line.
var last_line: NpcLine
## Facts from the game sent with each line ("it is night", "the player carries the silver key"): the
## NPC knows them for that line only; they are never stored as dialogue. Set it before [method say].
var game_state: PackedStringArray = []

var _call: NpcCall
var _line: NpcLine
# The transport status of the last Talk call (a failure there was already reported by the client).
var _last_call_status := 0
# Action name -> {"action": NpcProto.Action (null for the persona's own), "callable": Callable}.
var _actions: Dictionary = {}
# Bumped by each say() and cancel(), so a superseded exchange sends no more results.
var _exchange := 0


func _exit_tree() -> void:
	# An NPC that despawns mid-line should not leave the server generating for nobody.
	cancel()


## True while a line is streaming.
func is_talking() -> bool:
	return _call != null and not _call.is_done()


## Declares an action the NPC can take in every line, added to the persona's own. [param callable]
## (optional) runs with the arguments as a Dictionary when the NPC calls it; it may be a
## coroutine. For an action with [param await_result], what it returns (a String, or a value
## sent as JSON) goes back to the NPC, who then speaks about it. [param parameters] is a JSON
## schema (a Dictionary with "type": "object"), or argument name to type: a [enum Variant.Type]
## (TYPE_STRING, TYPE_INT, TYPE_FLOAT, TYPE_BOOL), an Array of allowed values, or a schema
## Dictionary; every listed argument is required. Returns false (and reports why) when the name
## is not an identifier or the parameters cannot be described.
func register_action(
	action_name: String,
	description: String,
	callable: Callable = Callable(),
	parameters: Dictionary = {},
	await_result := false
) -> bool:
	if not _valid_action_name(action_name):
		return false
	var schema := action_schema(parameters)
	if schema.is_empty() and not parameters.is_empty():
		_report(
			NpcGrpcWeb.Status.INVALID_ARGUMENT,
			(
				(
					"INVALID_ARGUMENT: action '%s': each parameter needs a TYPE_* constant, an Array of"
					+ " allowed values or a schema Dictionary"
				)
				% action_name
			)
		)
		return false
	var action := NpcProto.Action.new()
	action.name = action_name
	action.description = description
	action.parameters_schema = JSON.stringify(schema) if not schema.is_empty() else ""
	action.await_result = await_result
	_actions[action_name] = {"action": action, "callable": callable}
	return true


## Runs [param callable] when the NPC calls [param action_name], an action its persona declares on
## the server (like the tavern keeper's give_item). Same Callable contract as
## [method register_action].
func handle_action(action_name: String, callable: Callable) -> bool:
	if not _valid_action_name(action_name):
		return false
	_actions[action_name] = {"action": null, "callable": callable}
	return true


## Forgets an action registered with [method register_action] or [method handle_action].
func unregister_action(action_name: String) -> void:
	_actions.erase(action_name)


## The JSON schema [method register_action] sends for [param parameters] (empty when they cannot
## be described, or when there are none).
static func action_schema(parameters: Dictionary) -> Dictionary:
	if parameters.is_empty():
		return {}
	if parameters.get("type") is String:
		return parameters  # already a JSON schema
	var properties := {}
	var required := []
	for key: Variant in parameters:
		var spec: Variant = parameters[key]
		var property := {}
		if spec is Dictionary:
			property = spec
		elif spec is Array:
			property = {"enum": spec}
		elif spec is int and spec in _JSON_TYPES:
			property = {"type": _JSON_TYPES[spec]}
		else:
			return {}
		properties[str(key)] = property
		required.append(str(key))
	return {
		"type": "object",
		"properties": properties,
		"required": required,
		"additionalProperties": false,
	}


## Sends the results of the calls a line awaited ([member NpcLine.awaiting_results]): call id to
## content (a String, or a value sent as JSON). The NPC speaks about them; await the returned
## NpcLine. [method say] does this itself when every awaited action has a Callable.
func send_action_results(results: Dictionary) -> NpcLine:
	cancel()
	return await _send_results(results)


func _send_results(results: Dictionary) -> NpcLine:
	var line := NpcLine.new()
	for call_id: Variant in results:
		line.action_results[str(call_id)] = _result_text(results[call_id])
	if line.action_results.is_empty():
		return _fail_local(line, "send_action_results needs at least one call id and its result")
	if last_line != null and last_line.awaiting_results:
		last_line.awaiting_results = false
	action_results_sent.emit(line.action_results)
	var request := _talk_request(true)
	if request == null:
		return _fail_local(line, _NO_CLIENT)
	for call_id: String in line.action_results:
		var result := NpcProto.ActionResult.new()
		result.call_id = call_id
		result.content = line.action_results[call_id]
		request.action_results.append(result)
	await _stream(request, line)
	return line


## Says [param text] to the NPC and streams the reply. Await it for the [NpcLine]. A line still
## streaming is cancelled first.
func say(text: String) -> NpcLine:
	cancel()
	var line := NpcLine.new()
	line.player_text = text
	var request := _talk_request()
	if request == null:
		return _fail_local(line, _NO_CLIENT)
	request.text = text
	var exchange := _exchange
	await _stream(request, line)
	# Awaited actions whose Callables ran: send their results and stream the NPC's follow-up.
	var part := line
	for _i in MAX_FOLLOW_UPS:
		if not part.awaiting_results or exchange != _exchange:
			break
		var results := await _run_awaited(part)
		if results.is_empty() or exchange != _exchange:
			break
		part.follow_up = await _send_results(results)
		part = part.follow_up
	return line


func _talk_request(follow_up := false) -> NpcProto.TalkRequest:
	if _get_client() == null:
		return null
	var request := NpcProto.TalkRequest.new()
	# One id per line (reused by retries), so a retry never stores the line twice.
	request.request_id = _new_request_id()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	request.player_name = player_name
	for fact in game_state:
		request.game_state.append(fact)
	if not preset.is_empty():
		request.preset = preset
	if temperature >= 0.0:
		request.temperature = temperature
	if max_tokens > 0:
		request.max_tokens = max_tokens
	if seed_value >= 0:
		request.seed = seed_value
	for entry: Dictionary in _actions.values():
		if entry["action"] != null:
			request.actions.append(entry["action"])
	# REQUIRED and NAMED are for the player's line: on a follow-up they would force a call after
	# every result, and the NPC could never speak about it. Unset there is the server's default.
	var choice := action_choice
	if follow_up and choice != ActionChoice.NONE:
		choice = ActionChoice.AUTO
	if choice != ActionChoice.AUTO:
		request.action_choice = NpcProto.ActionChoice.new()
		request.action_choice.mode = _CHOICE_MODES[choice]
		if choice == ActionChoice.NAMED:
			request.action_choice.name = action_choice_name
	return request


## Sends [param line] again with its request id, after it failed (a broken connection, a server
## that went away): a line the server already stored comes back as stored, never twice.
func retry(line: NpcLine) -> NpcLine:
	cancel()
	var again := NpcLine.new()
	again.player_text = line.player_text
	again.action_results = line.action_results.duplicate()
	var request := _talk_request(not line.action_results.is_empty())
	if request == null:
		return _fail_local(again, _NO_CLIENT)
	request.text = line.player_text
	request.request_id = line.request_id
	for call_id: String in line.action_results:
		var result := NpcProto.ActionResult.new()
		result.call_id = call_id
		result.content = line.action_results[call_id]
		request.action_results.append(result)
	await _stream(request, again)
	return again


## The conversation key a proxy in front of several servers hashes on ("persona/conversation").
func conversation_header() -> String:
	var key := "%s/%s" % [persona_id.uri_encode(), conversation_id.uri_encode()]
	return "X-Npc-Conversation: " + key.replace("%3A", ":").replace("%40", "@")


func _stream(request: NpcProto.TalkRequest, line: NpcLine) -> void:
	var npc_client := _get_client()
	line.request_id = request.request_id
	for attempt in TALK_ATTEMPTS:
		await _stream_once(npc_client, request, line)
		# Retried by itself only while nothing reached the game; otherwise the game calls retry().
		var retryable := (
			line.status_code in [NpcGrpcWeb.Status.UNAVAILABLE, NpcGrpcWeb.Status.ABORTED]
		)
		if not retryable or line.delta_count > 0 or not line.action_calls.is_empty():
			break
		if attempt == TALK_ATTEMPTS - 1 or not is_inside_tree():
			break
		line.status_code = -1
		line.error_message = ""
		await get_tree().create_timer(0.2 * (attempt + 1)).timeout
	_end_line(line)


func _stream_once(npc_client: NpcClient, request: NpcProto.TalkRequest, line: NpcLine) -> void:
	var headers := PackedStringArray([conversation_header()])
	var rpc_call := npc_client.start_call(
		NpcProto.ConversationService.TALK, request.to_bytes(), headers
	)
	_call = rpc_call
	_line = line
	rpc_call.message_received.connect(_on_talk_message.bind(line))
	line_started.emit(line.player_text)
	await rpc_call.finished
	if _call == rpc_call:
		_call = null
	if rpc_call.status_code == NpcGrpcWeb.Status.OK and line.status_code < 0:
		line.status_code = NpcGrpcWeb.Status.INTERNAL
		line.error_message = "INTERNAL: the stream ended without a final message"
	elif line.status_code < 0:
		line.status_code = rpc_call.status_code
		line.error_message = rpc_call.status_message
	_last_call_status = rpc_call.status_code


func _end_line(line: NpcLine) -> void:
	line.cancelled = line.status_code == NpcGrpcWeb.Status.CANCELLED
	last_line = line
	if line.ok:
		line_finished.emit(line.text, line.data)
	elif line.cancelled:
		line_cancelled.emit()
	else:
		if _last_call_status == NpcGrpcWeb.Status.OK:
			push_error("npc_dialogue: " + line.error_message)
		failed.emit(line.status_code, line.error_message)


## Stops the line that is streaming, if any. Closing the connection stops the server generating,
## and the server stores no turn for a cancelled line.
func cancel() -> void:
	_exchange += 1
	if is_talking():
		_call.cancel()


## The stored turns of this conversation, oldest first: Dictionaries with player_line, npc_line,
## create_time_ms and player_name. Empty on error (see [signal failed]).
func get_history() -> Array[Dictionary]:
	var request := NpcProto.GetConversationRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	var turns: Array[Dictionary] = []
	var reply := await _unary(NpcProto.ConversationService.GET_CONVERSATION, request.to_bytes())
	if reply == null:
		return turns
	var response := NpcProto.GetConversationResponse.from_bytes(reply.payload)
	if response == null or response.conversation == null:
		_report(NpcGrpcWeb.Status.INTERNAL, "INTERNAL: undecodable GetConversation reply")
		return turns
	for turn in response.conversation.turns:
		turns.append(turn.to_dict())
	return turns


## Forgets every turn of this conversation. Returns how many were forgotten, or -1 on error.
func reset() -> int:
	var request := NpcProto.ResetConversationRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	var reply := await _unary(NpcProto.ConversationService.RESET_CONVERSATION, request.to_bytes())
	if reply == null:
		return -1
	var response := NpcProto.ResetConversationResponse.from_bytes(reply.payload)
	return response.deleted_turns if response != null else -1


## Records a fact the NPC remembers in this conversation ("the player returned the ring"), with an
## importance from 1 (trivia) to 10. Returns the stored memory as a Dictionary (id, text,
## importance, create_time_ms, source), or an empty one on error (see [signal failed]).
func add_memory(text: String, importance := 5) -> Dictionary:
	var request := NpcProto.AddMemoryRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	request.memory = NpcProto.Memory.new()
	request.memory.text = text
	request.memory.importance = importance
	var reply := await _unary(NpcProto.KnowledgeService.ADD_MEMORY, request.to_bytes())
	if reply == null:
		return {}
	var response := NpcProto.AddMemoryResponse.from_bytes(reply.payload)
	return response.memory.to_dict() if response != null and response.memory != null else {}


## This conversation's memories, oldest first, as Dictionaries. Empty on error.
func list_memories() -> Array[Dictionary]:
	var memories: Array[Dictionary] = []
	var token := ""
	while true:
		var request := NpcProto.ListMemoriesRequest.new()
		request.persona_id = persona_id
		request.conversation_id = conversation_id
		request.page_size = 1000
		request.page_token = token
		var reply := await _unary(NpcProto.KnowledgeService.LIST_MEMORIES, request.to_bytes())
		if reply == null:
			return memories
		var response := NpcProto.ListMemoriesResponse.from_bytes(reply.payload)
		if response == null:
			return memories
		for memory in response.memories:
			memories.append(memory.to_dict())
		token = response.next_page_token
		if token.is_empty():
			break
	return memories


## Forgets one memory by its id. Returns whether it was deleted.
func delete_memory(memory_id: int) -> bool:
	var request := NpcProto.DeleteMemoryRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	request.memory_id = memory_id
	return await _unary(NpcProto.KnowledgeService.DELETE_MEMORY, request.to_bytes()) != null


## The rolling summary of the turns that no longer fit in the NPC's prompt ("" when there is none
## yet, or on error).
func get_summary() -> String:
	var request := NpcProto.GetSummaryRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	var reply := await _unary(NpcProto.KnowledgeService.GET_SUMMARY, request.to_bytes())
	if reply == null:
		return ""
	var response := NpcProto.GetSummaryResponse.from_bytes(reply.payload)
	return response.summary.text if response != null and response.summary != null else ""


## Replaces the rolling summary with the game's own text ("" removes it). Returns whether it was
## stored.
func set_summary(text: String) -> bool:
	var request := NpcProto.SetSummaryRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	request.summary = NpcProto.ConversationSummary.new()
	request.summary.text = text
	return await _unary(NpcProto.KnowledgeService.SET_SUMMARY, request.to_bytes()) != null


## The whole conversation as a Dictionary for a save game (persona_id, conversation_id, turns).
## Empty on error. Numbers survive a JSON round trip: [method import_conversation] accepts floats.
func export_conversation() -> Dictionary:
	var conversation := await _export()
	return conversation.to_dict() if conversation != null else {}


## The whole conversation as compact protobuf bytes for a save game. Empty on error.
func export_conversation_bytes() -> PackedByteArray:
	var conversation := await _export()
	return conversation.to_bytes() if conversation != null else PackedByteArray()


## Restores this conversation from [method export_conversation]'s Dictionary or
## [method export_conversation_bytes]' bytes, replacing what the server held. The turns go to this
## node's persona and conversation ids. Returns the number of turns restored, or -1 on error.
func import_conversation(saved: Variant) -> int:
	var conversation: NpcProto.Conversation = null
	if saved is Dictionary:
		conversation = NpcProto.Conversation.from_dict(saved)
	elif saved is PackedByteArray:
		conversation = NpcProto.Conversation.from_bytes(saved)
	if conversation == null:
		_report(
			NpcGrpcWeb.Status.INVALID_ARGUMENT, "INVALID_ARGUMENT: not an exported conversation"
		)
		return -1
	conversation.persona_id = persona_id
	conversation.conversation_id = conversation_id
	var request := NpcProto.ImportConversationRequest.new()
	request.conversation = conversation
	var reply := await _unary(NpcProto.ConversationService.IMPORT_CONVERSATION, request.to_bytes())
	if reply == null:
		return -1
	var response := NpcProto.ImportConversationResponse.from_bytes(reply.payload)
	return response.imported_turns if response != null else -1


func _export() -> NpcProto.Conversation:
	var request := NpcProto.ExportConversationRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	var reply := await _unary(NpcProto.ConversationService.EXPORT_CONVERSATION, request.to_bytes())
	if reply == null:
		return null
	var response := NpcProto.ExportConversationResponse.from_bytes(reply.payload)
	if response == null or response.conversation == null:
		_report(NpcGrpcWeb.Status.INTERNAL, "INTERNAL: undecodable ExportConversation reply")
		return null
	return response.conversation


func _on_talk_message(payload: PackedByteArray, line: NpcLine) -> void:
	var message := NpcProto.TalkResponse.from_bytes(payload)
	if message == null:
		line.status_code = NpcGrpcWeb.Status.INTERNAL
		line.error_message = "INTERNAL: undecodable Talk message"
		_call.cancel(line.error_message)
		return
	if message.delta != null:
		line.delta_count += 1
		line.text += message.delta.content
		delta_received.emit(message.delta.content)
	elif message.action_call != null:
		_on_action_call(line, message.action_call)
	elif message.final != null:
		_finish_line(line, message.final)


func _on_action_call(line: NpcLine, action_call: NpcProto.ActionCall) -> void:
	for seen in line.action_calls:
		if seen["id"] == action_call.id:
			return  # the final message repeats the calls the stream already carried
	var parsed: Variant = JSON.parse_string(action_call.arguments)
	var arguments: Dictionary = parsed if parsed is Dictionary else {}
	var entry := {
		"id": action_call.id,
		"name": action_call.name,
		"arguments": arguments,
		"index": action_call.index,
	}
	line.action_calls.append(entry)
	action_called.emit(action_call.name, arguments, action_call.id)
	var handler: Dictionary = _actions.get(action_call.name, {})
	var callable: Callable = handler.get("callable", Callable())
	if callable.is_valid():
		entry["running"] = true
		_run_action(entry, callable)


func _run_action(entry: Dictionary, callable: Callable) -> void:
	# Awaiting works for plain functions too: the value comes back at once.
	var result: Variant = await callable.call(entry["arguments"])
	entry["result"] = _result_text(result)
	entry["running"] = false


## Waits for the Callables of [param line]'s awaited calls; returns call id to result, or empty
## when one has no Callable (the game then sends the results itself).
func _run_awaited(line: NpcLine) -> Dictionary:
	var results := {}
	for entry in line.action_calls:
		var handler: Dictionary = _actions.get(entry["name"], {})
		var action: NpcProto.Action = handler.get("action")
		if action != null and not action.await_result:
			continue  # fire-and-forget: nothing goes back
		if not entry.has("running"):
			return {}
		while entry["running"]:
			await get_tree().process_frame
		results[entry["id"]] = entry["result"]
	return results


## A new request id: 128 random bits as hex, like a UUID without dashes.
static func _new_request_id() -> String:
	return Crypto.new().generate_random_bytes(16).hex_encode()


func _result_text(result: Variant) -> String:
	if result is String:
		return result
	if result == null:
		return "done"
	return JSON.stringify(result)


func _valid_action_name(action_name: String) -> bool:
	if action_name.is_valid_identifier() and action_name.length() <= 64:
		return true
	_report(
		NpcGrpcWeb.Status.INVALID_ARGUMENT,
		(
			(
				"INVALID_ARGUMENT: action name '%s' must be a letter or '_' then letters, digits or"
				+ " '_', at most 64 characters"
			)
			% action_name
		)
	)
	return false


func _finish_line(line: NpcLine, final: NpcProto.CompletionFinal) -> void:
	line.ok = true
	line.status_code = NpcGrpcWeb.Status.OK
	if final.message != null and final.message.content != line.text:
		# The final text is authoritative; deltas never disagree with it unless bytes were lost.
		push_warning(
			"npc_dialogue: streamed text differs from the final text; using the final text"
		)
		line.text = final.message.content
	line.finish_reason = final.finish_reason
	line.replayed = final.replayed
	for action_call in final.action_calls:
		_on_action_call(line, action_call)
	line.awaiting_results = final.finish_reason == NpcProto.FinishReason.FINISH_REASON_ACTION
	line.truncated_turns = final.truncated_turns
	if final.usage != null:
		line.prompt_tokens = final.usage.prompt_tokens
		line.completion_tokens = final.usage.completion_tokens
	if final.timings != null:
		line.time_to_first_token_ms = final.timings.time_to_first_token_ms
		line.queue_ms = final.timings.queue_ms
	if final.structured != null:
		line.structured = true
		line.structured_error = final.structured.error
		var parsed: Variant = JSON.parse_string(line.text) if final.structured.valid else null
		if parsed is Dictionary:
			line.data = parsed
		elif line.structured_error.is_empty():
			line.structured_error = "the reply is not a JSON object"
		if not line.structured_error.is_empty():
			push_warning("npc_dialogue: structured reply is not valid: " + line.structured_error)


func _unary(rpc_path: String, request: PackedByteArray) -> NpcClient.Reply:
	var npc_client := _get_client()
	if npc_client == null:
		_report(NpcGrpcWeb.Status.FAILED_PRECONDITION, "FAILED_PRECONDITION: no NpcClient")
		return null
	var reply: NpcClient.Reply = await npc_client.call_unary(rpc_path, request)
	if not reply.is_ok():
		failed.emit(reply.code, reply.message)
		return null
	return reply


func _get_client() -> NpcClient:
	if client != null:
		return client
	var autoload := get_node_or_null("/root/NpcServer")
	return autoload as NpcClient


func _fail_local(line: NpcLine, why: String) -> NpcLine:
	line.status_code = NpcGrpcWeb.Status.FAILED_PRECONDITION
	line.error_message = "FAILED_PRECONDITION: " + why
	last_line = line
	_report(line.status_code, line.error_message)
	return line


func _report(code: int, message: String) -> void:
	push_error("npc_dialogue: " + message)
	failed.emit(code, message)
