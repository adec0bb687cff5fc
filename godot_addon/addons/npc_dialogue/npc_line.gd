class_name NpcLine
extends RefCounted
## What [method NpcDialogue.say] returns: the NPC's whole line, or why there is none.
##
## [codeblock]
## var line: NpcLine = await $Greta.say("Any rooms free?")
## if line.ok:
##     print(line.text)
## [/codeblock]

## True when the line completed (status OK).
var ok := false
## The whole reply: the concatenation of every delta.
var text := ""
## The parsed structured payload, when the persona has a response schema and the reply matched it.
var data: Dictionary = {}
## True when a response schema applied to this line (see [member data], [member structured_error]).
var structured := false
## Why the structured reply did not match its schema (empty when it did, or when none applied).
var structured_error := ""
## True when the line was cancelled (by [method NpcDialogue.cancel] or a newer [code]say()[/code]).
var cancelled := false
## The [enum NpcGrpcWeb.Status] code: 0 when ok.
var status_code := -1
## The error message, when not ok.
var error_message := ""
## Why generation stopped (an [enum NpcProto.FinishReason] value).
var finish_reason := 0
## How many deltas streamed in.
var delta_count := 0
## Tokens in the prompt.
var prompt_tokens := 0
## Tokens generated.
var completion_tokens := 0
## Milliseconds from the request to the first token, as the server measured it.
var time_to_first_token_ms := 0.0
## Milliseconds the request waited for the server's engine (other NPCs' lines ahead of it).
var queue_ms := 0.0
## Oldest turns left out of the prompt to fit the model's context window.
var truncated_turns := 0
## What the player said.
var player_text := ""
## The line's request id: the same on every retry of it, so a line the server already answered
## comes back as it was stored ([member replayed]) instead of being generated again.
var request_id := ""
## True when the server returned the stored reply of an earlier try of this line.
var replayed := false
## The actions the NPC called in this line, in order: Dictionaries with id, name, arguments (the
## parsed JSON object), index and, once a registered Callable returned, result (the text sent back
## for an awaited call).
var action_calls: Array[Dictionary] = []
## The results this line carried instead of player text (a follow-up after awaited actions):
## call id to content.
var action_results: Dictionary = {}
## True when the line ended by calling an action that awaits its result ([member finish_reason] is
## FINISH_REASON_ACTION) and no result was sent yet: send it with
## [method NpcDialogue.send_action_results].
var awaiting_results := false
## The NPC's next line, spoken after the results of this line's awaited actions went back (null
## when there was none).
var follow_up: NpcLine


## The last line of the exchange: this one, or the end of its [member follow_up] chain.
func last() -> NpcLine:
	var line := self
	while line.follow_up != null:
		line = line.follow_up
	return line
