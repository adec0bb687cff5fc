@icon("res://addons/npc_dialogue/icon.svg")
class_name NpcNarrator
extends Node
## Types an [NpcDialogue]'s streamed reply into a [RichTextLabel], typewriter style.
##
## Text is added as plain text (no BBCode from the model) as deltas arrive, and revealed at
## [member characters_per_second], never ahead of what has arrived.
## [codeblock]
## $Narrator.dialogue = $NarratorVoice   # an NpcDialogue with persona_id = "narrator"
## $Narrator.label = $StoryLabel
## await $Narrator.narrate("The hero enters the tavern at dusk.")
## [/codeblock]

## Emitted when the whole line is visible (after the line finished and typing caught up).
signal typing_finished(text: String)

## The dialogue whose replies are typed out.
@export var dialogue: NpcDialogue:
	set(value):
		_disconnect()
		dialogue = value
		_connect()
## The label the text is typed into.
@export var label: RichTextLabel
## Reveal speed. 0 shows text as soon as it arrives.
@export_range(0.0, 1000.0, 1.0, "suffix:chars/s") var characters_per_second := 60.0
## Clear the label when a new line starts.
@export var clear_on_new_line := true

var _shown := 0.0
var _line_done := false
var _text := ""


func _ready() -> void:
	_connect()
	set_process(false)


func _process(delta: float) -> void:
	if label == null:
		return
	var total := label.get_total_character_count()
	if characters_per_second <= 0.0:
		_shown = total
	else:
		_shown = minf(_shown + characters_per_second * delta, total)
	label.visible_characters = int(_shown)
	if _line_done and int(_shown) >= total:
		label.visible_characters = -1
		set_process(false)
		typing_finished.emit(_text)


## Says [param scene] through the dialogue and types the reply; await it for the [NpcLine].
func narrate(scene: String) -> NpcLine:
	if dialogue == null:
		push_error("npc_dialogue: NpcNarrator has no dialogue to narrate with")
		return NpcLine.new()
	return await dialogue.say(scene)


## Whether text is still being revealed or streamed.
func is_typing() -> bool:
	return is_processing()


## The text typed so far (all that arrived, including what is not yet revealed).
func get_text() -> String:
	return _text


func _connect() -> void:
	if dialogue == null or not is_inside_tree():
		return
	if not dialogue.line_started.is_connected(_on_line_started):
		dialogue.line_started.connect(_on_line_started)
		dialogue.delta_received.connect(_on_delta)
		dialogue.line_finished.connect(_on_line_finished)
		dialogue.failed.connect(_on_stopped)
		dialogue.line_cancelled.connect(_on_cancelled)


func _disconnect() -> void:
	if dialogue != null and dialogue.line_started.is_connected(_on_line_started):
		dialogue.line_started.disconnect(_on_line_started)
		dialogue.delta_received.disconnect(_on_delta)
		dialogue.line_finished.disconnect(_on_line_finished)
		dialogue.failed.disconnect(_on_stopped)
		dialogue.line_cancelled.disconnect(_on_cancelled)


func _on_line_started(_player_text: String) -> void:
	_text = ""
	_line_done = false
	if label != null:
		if clear_on_new_line:
			label.clear()
			_shown = 0.0
		label.visible_characters = int(_shown)
	set_process(true)


func _on_delta(text: String) -> void:
	_text += text
	if label != null:
		label.add_text(text)


func _on_line_finished(_text_done: String, _data: Dictionary) -> void:
	_line_done = true


func _on_stopped(_code: int, _message: String) -> void:
	_line_done = true


func _on_cancelled() -> void:
	_line_done = true
