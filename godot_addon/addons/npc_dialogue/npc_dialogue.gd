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

## The last finished (or failed) line.
var last_line: NpcLine

var _call: NpcCall
var _line: NpcLine


func _exit_tree() -> void:
	# An NPC that despawns mid-line should not leave the server generating for nobody.
	cancel()


## True while a line is streaming.
func is_talking() -> bool:
	return _call != null and not _call.is_done()


## Says [param text] to the NPC and streams the reply. Await it for the [NpcLine]. A line still
## streaming is cancelled first.
func say(text: String) -> NpcLine:
	cancel()
	var line := NpcLine.new()
	line.player_text = text
	var npc_client := _get_client()
	if npc_client == null:
		return _fail_local(
			line, "no NpcClient: set `client` or enable the plugin (NpcServer autoload)"
		)
	var request := NpcProto.TalkRequest.new()
	request.persona_id = persona_id
	request.conversation_id = conversation_id
	request.text = text
	request.player_name = player_name
	if not preset.is_empty():
		request.preset = preset
	if temperature >= 0.0:
		request.temperature = temperature
	if max_tokens > 0:
		request.max_tokens = max_tokens
	if seed_value >= 0:
		request.seed = seed_value
	var rpc_call := npc_client.start_call(NpcProto.ConversationService.TALK, request.to_bytes())
	_call = rpc_call
	_line = line
	rpc_call.message_received.connect(_on_talk_message.bind(line))
	line_started.emit(text)
	await rpc_call.finished
	if _call == rpc_call:
		_call = null
	if rpc_call.status_code == NpcGrpcWeb.Status.OK and line.status_code < 0:
		line.status_code = NpcGrpcWeb.Status.INTERNAL
		line.error_message = "INTERNAL: the stream ended without a final message"
	elif line.status_code < 0:
		line.status_code = rpc_call.status_code
		line.error_message = rpc_call.status_message
	line.cancelled = line.status_code == NpcGrpcWeb.Status.CANCELLED
	last_line = line
	if line.ok:
		line_finished.emit(line.text, line.data)
	elif line.cancelled:
		line_cancelled.emit()
	else:
		if rpc_call.status_code == NpcGrpcWeb.Status.OK:
			push_error("npc_dialogue: " + line.error_message)
		failed.emit(line.status_code, line.error_message)
	return line


## Stops the line that is streaming, if any. Closing the connection stops the server generating,
## and the server stores no turn for a cancelled line.
func cancel() -> void:
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
	elif message.final != null:
		_finish_line(line, message.final)


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
