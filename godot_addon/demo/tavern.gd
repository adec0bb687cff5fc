extends Control
## Demo: the player talks to Greta, keeper of the Rusty Flagon. Her reply streams into the dialogue
## box as it is generated, and the narrator sets the scene in the label above. Paying for a room
## makes Greta hand over an item: her persona's give_item action, which lands in the inventory.
##
## Needs a running npcserver; the NpcServer autoload reads its address from Project Settings >
## npc_dialogue/server (127.0.0.1:8080 by default).

const OPENING := "The traveler pushes open the door of the Rusty Flagon on a cold, windy evening."
const PAY_LINE := "Here are three silver. I'll take the room."

## What Greta has handed the player.
var inventory: Array[String] = []

@onready var _greta: NpcDialogue = $Greta
@onready var _narrator: NpcNarrator = $Narrator
@onready var _box: RichTextLabel = $Layout/DialogueBox
@onready var _input: LineEdit = $Layout/Input/LineEdit
@onready var _send: Button = $Layout/Input/Send
@onready var _status: Label = $Layout/Status
@onready var _pay: Button = $Layout/Input/Pay
@onready var _inventory: Label = $Layout/Inventory


func _ready() -> void:
	_greta.delta_received.connect(_box.add_text)
	_greta.line_finished.connect(_on_greta_finished)
	_greta.failed.connect(_on_failed)
	_narrator.dialogue.failed.connect(_on_failed)
	_input.text_submitted.connect(say)
	_send.pressed.connect(func() -> void: say(_input.text))
	_pay.pressed.connect(pay)
	_greta.handle_action("give_item", _on_give_item)
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


## The player pays for a room (what the Pay button does). Paying is when Greta must hand something
## over, so this line names her give_item action: the server then guarantees the call.
func pay() -> void:
	if _greta.is_talking():
		return
	_greta.action_choice = NpcDialogue.ActionChoice.NAMED
	_greta.action_choice_name = "give_item"
	await say(PAY_LINE)
	_greta.action_choice = NpcDialogue.ActionChoice.AUTO


func _on_give_item(arguments: Dictionary) -> void:
	var item := str(arguments.get("item", "something"))
	inventory.append(item)
	_inventory.text = "Inventory: " + ", ".join(inventory)
	_box.push_italics()
	_box.add_text(" [Greta hands you the %s] " % item)
	_box.pop()


func _on_greta_finished(_text: String, _data: Dictionary) -> void:
	_status.text = ""


func _on_failed(_code: int, message: String) -> void:
	_status.text = message
	_set_busy(false)


func _set_busy(busy: bool) -> void:
	_send.disabled = busy
	_pay.disabled = busy
	_input.editable = not busy
	if not busy:
		_input.grab_focus()
