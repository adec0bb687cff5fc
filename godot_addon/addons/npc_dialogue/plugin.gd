@tool
extends EditorPlugin
## Registers the NpcServer autoload and the npc_dialogue/server/* project settings. Nothing else:
## the nodes are global classes (class_name) and need no registration.

## The autoload's name: NpcDialogue nodes use /root/NpcServer when given no client.
const AUTOLOAD_NAME := "NpcServer"
## The autoload's script.
const AUTOLOAD_PATH := "res://addons/npc_dialogue/npc_client.gd"
## Setting name, default value, property hint, hint string.
const SETTINGS := [
	["npc_dialogue/server/host", "127.0.0.1", PROPERTY_HINT_NONE, ""],
	["npc_dialogue/server/port", 8080, PROPERTY_HINT_RANGE, "1,65535"],
	["npc_dialogue/server/use_tls", false, PROPERTY_HINT_NONE, ""],
	["npc_dialogue/server/api_key", "", PROPERTY_HINT_PASSWORD, ""],
	["npc_dialogue/server/connect_timeout_s", 10.0, PROPERTY_HINT_RANGE, "0.1,600,0.1,suffix:s"],
	["npc_dialogue/server/idle_timeout_s", 60.0, PROPERTY_HINT_RANGE, "0.1,600,0.1,suffix:s"],
]


func _enable_plugin() -> void:
	add_autoload_singleton(AUTOLOAD_NAME, AUTOLOAD_PATH)
	for setting: Array in SETTINGS:
		if not ProjectSettings.has_setting(setting[0]):
			ProjectSettings.set_setting(setting[0], setting[1])
		ProjectSettings.set_initial_value(setting[0], setting[1])
		(
			ProjectSettings
			. add_property_info(
				{
					"name": setting[0],
					"type": typeof(setting[1]),
					"hint": setting[2],
					"hint_string": setting[3],
				}
			)
		)
		ProjectSettings.set_as_basic(setting[0], true)
	ProjectSettings.save()


func _disable_plugin() -> void:
	remove_autoload_singleton(AUTOLOAD_NAME)
