extends Node
## Runs the addon's GDScript test suites inside the engine, prints "N passed, N failed" and quits
## with 0 when all passed. The pytest side (tests/godot) builds the pack with run_config.json.

const SUITES := [
	"res://tests/test_wire.gd",
	"res://tests/test_dialogue.gd",
]
const CONFIG_PATH := "res://tests/run_config.json"


func _ready() -> void:
	var config: Variant = JSON.parse_string(FileAccess.get_file_as_string(CONFIG_PATH))
	if not config is Dictionary:
		printerr("cannot read ", CONFIG_PATH)
		get_tree().quit(2)
		return
	var only: String = config.get("only", "")
	var passed := 0
	var failed := 0
	for path: String in SUITES:
		var suite: NpcTestCase = load(path).new()
		suite.config = config
		suite.name = path.get_file().get_basename()
		add_child(suite)
		var names: Array[String] = []
		for method: Dictionary in suite.get_method_list():
			var method_name: String = method["name"]
			if method_name.begins_with("test_") and _selected(method_name, only):
				names.append(method_name)
		names.sort()
		for method_name in names:
			print("RUN %s.%s" % [suite.name, method_name])
			suite.failures.clear()
			suite.check_count = 0
			var started := Time.get_ticks_msec()
			await suite.call(method_name)
			var took := (Time.get_ticks_msec() - started) / 1000.0
			if suite.failures.is_empty() and suite.check_count > 0:
				passed += 1
				print(
					(
						"PASS %s.%s (%d checks, %.1f s)"
						% [suite.name, method_name, suite.check_count, took]
					)
				)
			else:
				failed += 1
				if suite.check_count == 0:
					printerr("    FAIL: the test made no checks")
				print("FAIL %s.%s" % [suite.name, method_name])
		suite.queue_free()
	print("%d passed, %d failed" % [passed, failed])
	get_tree().quit(0 if failed == 0 and passed > 0 else 1)


## Whether a test runs: all when [param only] is empty, else those containing one of its
## "|"-separated parts.
func _selected(method_name: String, only: String) -> bool:
	if only.is_empty():
		return true
	for part in only.split("|", false):
		if part in method_name:
			return true
	return false
