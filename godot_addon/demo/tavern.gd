extends Control
## Demo: the player talks to Greta, keeper of the Rusty Flagon. Her reply streams into the dialogue
## box as it is generated, and the narrator sets the scene in the label above.
##
## Needs a running npcserver; the NpcServer autoload reads its address from Project Settings >
## npc_dialogue/server (127.0.0.1:8080 by default).

const OPENING := "The traveler pushes open the door of the Rusty Flagon on a cold, windy evening."

@onready var _greta: NpcDialogue = $Greta
@onready var _narrator: NpcNarrator = $Narrator
@onready var _box: RichTextLabel = $Layout/DialogueBox
@onready var _input: LineEdit = $Layout/Input/LineEdit
@onready var _send: Button = $Layout/Input/Send
@onready var _status: Label = $Layout/Status


func _ready() -> void:
	_greta.delta_received.connect(_box.add_text)
	_greta.line_finished.connect(_on_greta_finished)
	_greta.failed.connect(_on_failed)
	_narrator.dialogue.failed.connect(_on_failed)
	_input.text_submitted.connect(say)
	_send.pressed.connect(func() -> void: say(_input.text))
	_narrator.narrate(OPENING)


## Sends the player's line to Greta (what the Say button and Enter do).
func say(text: String) -> void:
	if text.strip_edges().is_empty() or _greta.is_talking():
		return
	_input.clear()
	_set_busy(true)
	if not _box.get_parsed_text().is_empty():
		_box.add_text("\n")
	_box.push_bold()
	_box.add_text("You: ")
	_box.pop()
	_box.add_text(text)
	_box.push_bold()
	_box.add_text("\nGreta: ")
	_box.pop()
	await _greta.say(text)
	_set_busy(false)


func _on_greta_finished(_text: String, _data: Dictionary) -> void:
	_status.text = ""


func _on_failed(_code: int, message: String) -> void:
	_status.text = message
	_set_busy(false)


func _set_busy(busy: bool) -> void:
	_send.disabled = busy
	_input.editable = not busy
	if not busy:
		_input.grab_focus()
