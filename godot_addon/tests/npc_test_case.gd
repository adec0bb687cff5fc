class_name NpcTestCase
extends Node
## Base of the addon's GDScript test suites: checks, waiting, and nodes wired to the test server.
##
## The runner calls every method named test_* (awaiting coroutines). A test fails when any check in
## it fails; each failure prints a FAIL line with what was expected.

## The run config (res://tests/run_config.json): server host/port and the pytest side's helpers.
var config: Dictionary = {}
## Failure messages of the running test.
var failures: Array[String] = []
## Checks made by the running test.
var check_count := 0


## Records a check; returns [param condition] so a test can stop early.
func check(condition: bool, what: String) -> bool:
	check_count += 1
	if not condition:
		failures.append(what)
		printerr("    FAIL: ", what)
	return condition


## Checks that [param actual] equals [param expected].
func check_eq(actual: Variant, expected: Variant, what: String) -> bool:
	var numbers := [TYPE_INT, TYPE_FLOAT]
	var same := (
		typeof(actual) == typeof(expected)
		or (typeof(actual) in numbers and typeof(expected) in numbers)
	)
	return check(same and actual == expected, "%s: expected %s, got %s" % [what, expected, actual])


## Waits [param seconds] of real time.
func wait_seconds(seconds: float) -> void:
	await get_tree().create_timer(seconds, true, false, true).timeout


## A client for the test server, as a child of this suite.
func make_client(port_key: String = "port") -> NpcClient:
	var client := NpcClient.new()
	client.use_project_settings = false
	client.host = str(config.get("host", "127.0.0.1"))
	client.port = int(config[port_key])
	client.idle_timeout_s = float(config.get("idle_timeout_s", 60.0))
	add_child(client)
	return client


## An NpcDialogue for [param persona_id], on a conversation id unique to this test run.
func make_dialogue(
	persona_id: String, conversation: String, client: NpcClient = null
) -> NpcDialogue:
	var npc := NpcDialogue.new()
	npc.persona_id = persona_id
	npc.conversation_id = "%s-%s" % [config.get("run_id", "run"), conversation]
	npc.client = client if client != null else make_client()
	add_child(npc)
	return npc


## Records the signals of an NpcDialogue in order, as [name, args...] Arrays.
class Recorder:
	var events: Array[Array] = []

	func _init(npc: NpcDialogue) -> void:
		npc.line_started.connect(func(text: String) -> void: events.append(["started", text]))
		npc.delta_received.connect(func(text: String) -> void: events.append(["delta", text]))
		npc.line_finished.connect(
			func(text: String, data: Dictionary) -> void: events.append(["finished", text, data])
		)
		npc.failed.connect(
			func(code: int, message: String) -> void: events.append(["failed", code, message])
		)
		npc.line_cancelled.connect(func() -> void: events.append(["cancelled"]))

	## The events named [param event_name].
	func named(event_name: String) -> Array[Array]:
		var out: Array[Array] = []
		for event in events:
			if event[0] == event_name:
				out.append(event)
		return out

	## The names of the events, in order.
	func names() -> Array[String]:
		var out: Array[String] = []
		for event in events:
			out.append(event[0])
		return out

	## The concatenated delta texts.
	func delta_text() -> String:
		var out := ""
		for event in named("delta"):
			out += event[1]
		return out
