@icon("res://addons/npc_dialogue/icon.svg")
class_name NpcClient
extends Node
## Holds the npcserver connection settings and runs gRPC-Web calls, polling them every frame.
##
## The plugin registers one as the autoload [code]NpcServer[/code], configured from Project
## Settings > npc_dialogue/server/*. [NpcDialogue] nodes use that one unless given another.
## Each call gets its own HTTP/1.1 connection (gRPC-Web over [HTTPClient]), so streams never
## wait on each other and cancelling one closes only its connection.
## [codeblock]
## NpcServer.host = "127.0.0.1"
## NpcServer.port = 8080
## [/codeblock]

## Emitted when any call fails (not when it is cancelled), after the caller's own signals.
signal call_failed(rpc_path: String, code: int, message: String)

## Project settings this client reads in [method _ready] (the plugin registers them).
const SETTINGS := {
	"host": "npc_dialogue/server/host",
	"port": "npc_dialogue/server/port",
	"use_tls": "npc_dialogue/server/use_tls",
	"api_key": "npc_dialogue/server/api_key",
	"connect_timeout_s": "npc_dialogue/server/connect_timeout_s",
	"idle_timeout_s": "npc_dialogue/server/idle_timeout_s",
}
## Sent as x-user-agent (browsers forbid setting User-Agent from a page).
const USER_AGENT := "npc-dialogue-godot/0.1"
## Installed by [method install_web_abort] (JavaScript, run once per page).
const _WEB_ABORT_JS := """
(function () {
	if (window.__npcDialogueFetchAbort) return;
	window.__npcDialogueFetchAbort = true;
	const plainFetch = window.fetch.bind(window);
	window.fetch = function (input, init) {
		if (init && init.signal) return plainFetch(input, init);
		const controller = new AbortController();
		const options = Object.assign({}, init || {}, {signal: controller.signal});
		return plainFetch(input, options).then(function (response) {
			if (typeof response.abort !== "function") {
				response.abort = function () { controller.abort(); };
			}
			return response;
		});
	};
})();
"""

static var _web_abort_installed := false

## Host name or address of the npcserver HTTP door.
@export var host := "127.0.0.1"
## Port of the npcserver HTTP door (its gRPC-Web port, 8080 by default).
@export_range(1, 65535) var port := 8080
## Connect with HTTPS. Web exports served over HTTPS need it (browsers block mixed content).
@export var use_tls := false
## Sent as [code]authorization: Bearer <key>[/code] when not empty.
@export var api_key := ""
## Longest wait for the TCP/TLS connection (desktop; the browser manages it on the web).
@export_range(0.1, 600.0, 0.1, "suffix:s") var connect_timeout_s := 10.0
## Longest wait for the response to start, and between two pieces of a stream.
@export_range(0.1, 600.0, 0.1, "suffix:s") var idle_timeout_s := 60.0
## Read the settings above from Project Settings (npc_dialogue/server/*) when entering the tree.
## The [code]NpcServer[/code] autoload always does; other clients keep their own values unless set.
@export var use_project_settings := false

var _calls: Array[NpcCall] = []


## The result of a unary call.
class Reply:
	extends RefCounted
	## The [enum NpcGrpcWeb.Status] code; 0 is OK.
	var code := -1
	## The error message (empty when OK).
	var message := ""
	## The response message bytes (empty on error).
	var payload := PackedByteArray()

	## Whether the call succeeded.
	func is_ok() -> bool:
		return code == NpcGrpcWeb.Status.OK


func _init() -> void:
	# Keep streams flowing while the game is paused (dialogue in a pause menu, a cutscene).
	process_mode = Node.PROCESS_MODE_ALWAYS


func _ready() -> void:
	if use_project_settings or get_path() == ^"/root/NpcServer":
		for property: String in SETTINGS:
			if ProjectSettings.has_setting(SETTINGS[property]):
				set(property, ProjectSettings.get_setting(SETTINGS[property]))
	if OS.has_feature("web"):
		install_web_abort()


func _process(_delta: float) -> void:
	# Iterate over a copy: a signal handler may start or cancel calls while we poll.
	for rpc_call in _calls.duplicate():
		rpc_call.poll()
	var running: Array[NpcCall] = []
	for rpc_call in _calls:
		if not rpc_call.is_done():
			running.append(rpc_call)
	_calls = running


## The server's base URL, for messages.
func get_base_url() -> String:
	return "%s://%s:%d" % ["https" if use_tls else "http", host, port]


## The HTTP headers every call sends.
func request_headers() -> PackedStringArray:
	var headers := PackedStringArray(
		[
			"Content-Type: " + NpcGrpcWeb.CONTENT_TYPE,
			"Accept: " + NpcGrpcWeb.CONTENT_TYPE,
			"X-Grpc-Web: 1",
			"X-User-Agent: " + USER_AGENT,
		]
	)
	if not api_key.is_empty():
		headers.append("Authorization: Bearer " + api_key)
	return headers


## Starts a call and returns it; it runs while this node is in the tree. Connect to its signals.
## [param extra_headers] ("Name: value") go with this call only.
func start_call(
	rpc_path: String, request: PackedByteArray, extra_headers := PackedStringArray()
) -> NpcCall:
	if OS.has_feature("web") and not _web_abort_installed:
		install_web_abort()
	var rpc_call := NpcCall.new(self, rpc_path, request, extra_headers)
	rpc_call.finished.connect(_on_call_finished.bind(rpc_path), CONNECT_DEFERRED)
	if is_inside_tree():
		_calls.append(rpc_call)
	else:
		rpc_call.cancel.call_deferred(
			"the NpcClient is not in the scene tree, so nothing polls the call"
		)
	return rpc_call


## Runs a unary call and waits for its reply. Failures are also reported by [signal call_failed].
func call_unary(rpc_path: String, request: PackedByteArray) -> Reply:
	var rpc_call := start_call(rpc_path, request)
	var reply := Reply.new()
	rpc_call.message_received.connect(
		func(payload: PackedByteArray) -> void: reply.payload = payload
	)
	await rpc_call.finished
	reply.code = rpc_call.status_code
	reply.message = rpc_call.status_message
	if reply.is_ok() and rpc_call.messages_received != 1:
		reply.code = NpcGrpcWeb.Status.INTERNAL
		reply.message = "INTERNAL: a unary call returned %d messages" % rpc_call.messages_received
	return reply


## Cancels every running call.
func cancel_all() -> void:
	for rpc_call in _calls.duplicate():
		rpc_call.cancel()


## Number of calls in flight.
func get_active_call_count() -> int:
	return _calls.size()


## Web exports only: makes [method HTTPClient.close] abort the browser's fetch. Godot's web
## HTTPClient closes by calling [code]response.abort()[/code], which fetch responses lack, so the
## request would keep streaming and the server would keep generating. This gives each fetch an
## AbortController and the response an abort() that uses it. Safe to call more than once.
static func install_web_abort() -> void:
	if _web_abort_installed or not OS.has_feature("web"):
		return
	_web_abort_installed = true
	JavaScriptBridge.eval(_WEB_ABORT_JS, true)


func _on_call_finished(code: int, message: String, rpc_path: String) -> void:
	if code == NpcGrpcWeb.Status.OK or code == NpcGrpcWeb.Status.CANCELLED:
		return
	push_error("npc_dialogue: " + message)
	call_failed.emit(rpc_path, code, message)
