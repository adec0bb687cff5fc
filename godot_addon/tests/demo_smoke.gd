extends Node
## Plays the demo scene as a player would, through the NpcServer autoload configured by project
## settings: waits for the narrator's opening, types a line to Greta, presses Say, and checks that
## both replies streamed into their labels; then presses Pay and checks that Greta's give_item
## call put an item in the inventory. Prints "N passed, N failed" and quits.

var _passed := 0
var _failed := 0


func _ready() -> void:
	var demo: Control = load("res://demo/tavern.tscn").instantiate()
	add_child(demo)
	var narrator: NpcNarrator = demo.get_node("Narrator")
	var narrator_label: RichTextLabel = demo.get_node("Layout/NarratorLabel")
	var greta: NpcDialogue = demo.get_node("Greta")
	var box: RichTextLabel = demo.get_node("Layout/DialogueBox")
	var server := get_node_or_null("/root/NpcServer") as NpcClient
	_check(server != null, "the NpcServer autoload is an NpcClient")
	_check(server != null and server.port != 8080, "the autoload read its port from the settings")
	var line: NpcLine = await _until_finished(narrator.dialogue)
	_check(line != null and line.ok, "the narrator's opening line completed")
	while narrator.is_typing():
		await get_tree().process_frame
	_check(not narrator_label.get_parsed_text().is_empty(), "the narrator typed the opening")
	print("DEMO narrator: ", narrator_label.get_parsed_text())
	var input: LineEdit = demo.get_node("Layout/Input/LineEdit")
	input.text = "Good evening. Is there a room for the night?"
	var deltas := [0]
	greta.delta_received.connect(func(_t: String) -> void: deltas[0] += 1)
	(demo.get_node("Layout/Input/Send") as Button).pressed.emit()
	var reply: NpcLine = await _until_finished(greta)
	_check(reply != null and reply.ok, "Greta's reply completed")
	_check(deltas[0] >= 2, "Greta's reply streamed (%d deltas)" % deltas[0])
	var shown := box.get_parsed_text()
	_check(reply != null and shown.ends_with(reply.text), "the dialogue box shows the reply")
	_check("You: Good evening." in shown, "the dialogue box shows the player's line")
	print("DEMO dialogue: ", shown.replace("\n", " | "))
	(demo.get_node("Layout/Input/Pay") as Button).pressed.emit()
	await get_tree().process_frame
	var paid: NpcLine = await _until_finished(greta)
	_check(paid != null and paid.ok, "Greta answered the payment")
	_check(paid != null and paid.action_calls.size() == 1, "Greta called an action when paid")
	var inventory: Array = demo.get("inventory")
	_check(inventory.size() == 1, "the item reached the inventory: %s" % [inventory])
	_check(
		inventory.size() == 1 and inventory[0] in ["room key", "mutton stew", "brown ale"],
		"the item is one Greta sells"
	)
	var shown_inventory: String = (demo.get_node("Layout/Inventory") as Label).text
	_check(shown_inventory.ends_with(", ".join(inventory)), "the inventory label shows it")
	print("DEMO inventory: ", shown_inventory)
	print("DEMO payment: ", box.get_parsed_text().replace("\n", " | "))
	await get_tree().process_frame
	print("%d passed, %d failed" % [_passed, _failed])
	get_tree().quit(0 if _failed == 0 else 1)


func _until_finished(npc: NpcDialogue) -> NpcLine:
	while npc.last_line == null or npc.is_talking():
		await get_tree().process_frame
	return npc.last_line


func _check(condition: bool, what: String) -> void:
	if condition:
		_passed += 1
	else:
		_failed += 1
		printerr("FAIL: ", what)
