class_name NpcCall
extends RefCounted
## One gRPC-Web call over its own [HTTPClient] connection, advanced by [method poll] once a frame.
##
## [NpcClient] creates and polls calls; games normally use [NpcDialogue] instead. The response body
## is read as it arrives, so each streamed message is emitted in the frame it lands, with no
## threads. Every call ends exactly once with [signal finished]: status 0 (OK) after the trailer,
## or an error status (server error, refused connection, timeout, cancel) with a message.

## Emitted for each response message, with its protobuf bytes.
signal message_received(payload: PackedByteArray)
## Emitted once when the call ends. [param code] is an [enum NpcGrpcWeb.Status].
signal finished(code: int, message: String)

## Where a call is.
enum State { CONNECTING, SENDING, RECEIVING, DONE }

## The RPC path ("/npcserver.api.v1.ConversationService/Talk").
var path: String
## Where the call is.
var state: State = State.CONNECTING
## The final status code, once [member state] is DONE.
var status_code := -1
## The final status message, once [member state] is DONE.
var status_message := ""
## Messages received so far.
var messages_received := 0

var _http := HTTPClient.new()
var _connect_timeout_s: float
var _idle_timeout_s: float
var _headers: PackedStringArray
var _body: PackedByteArray
var _parser := NpcGrpcWeb.FrameParser.new()
var _deadline_ms := 0
var _label: String
var _host: String
var _port: int
var _tls: TLSOptions
var _started := false


func _init(
	client: NpcClient,
	rpc_path: String,
	request: PackedByteArray,
	extra_headers := PackedStringArray()
) -> void:
	path = rpc_path
	_connect_timeout_s = client.connect_timeout_s
	_idle_timeout_s = client.idle_timeout_s
	_headers = client.request_headers()
	_headers.append_array(extra_headers)
	_body = NpcGrpcWeb.frame(request)
	_label = "%s at %s" % [path.get_file(), client.get_base_url()]
	_host = client.host
	_port = client.port
	_tls = TLSOptions.client() if client.use_tls else null


## True once the call has ended.
func is_done() -> bool:
	return state == State.DONE


## Advances the call: connects, sends, reads whatever arrived. Returns false once it is done.
func poll() -> bool:
	if state == State.DONE:
		return false
	if not _started:
		# Connecting here, not in _init, lets the caller connect signals before any can fire.
		_started = true
		_deadline_ms = Time.get_ticks_msec() + int(_connect_timeout_s * 1000.0)
		var err := _http.connect_to_host(_host, _port, _tls)
		if err != OK:
			_finish(NpcGrpcWeb.Status.UNAVAILABLE, "cannot connect: %s" % error_string(err))
			return false
	_http.poll()
	var status := _http.get_status()
	match state:
		State.CONNECTING:
			_poll_connecting(status)
		State.SENDING:
			_poll_sending(status)
		State.RECEIVING:
			_poll_receiving(status)
	return state != State.DONE


## Ends the call now with CANCELLED and closes the connection, which stops the server's work.
func cancel(reason: String = "cancelled by the game") -> void:
	if state != State.DONE:
		_finish(NpcGrpcWeb.Status.CANCELLED, reason)


func _poll_connecting(status: HTTPClient.Status) -> void:
	match status:
		HTTPClient.STATUS_RESOLVING, HTTPClient.STATUS_CONNECTING:
			_check_deadline("connecting")
		HTTPClient.STATUS_CONNECTED:
			var err := _http.request_raw(HTTPClient.METHOD_POST, path, _headers, _body)
			if err != OK:
				_finish(NpcGrpcWeb.Status.UNAVAILABLE, "could not send: %s" % error_string(err))
				return
			state = State.SENDING
			_deadline_ms = Time.get_ticks_msec() + int(_idle_timeout_s * 1000.0)
		_:
			_fail_connection(status)


func _poll_sending(status: HTTPClient.Status) -> void:
	match status:
		HTTPClient.STATUS_REQUESTING:
			_check_deadline("waiting for the response")
		HTTPClient.STATUS_BODY, HTTPClient.STATUS_CONNECTED:
			if not _http.has_response():
				_check_deadline("waiting for the response")
				return
			_on_headers()
		_:
			_fail_connection(status)


func _on_headers() -> void:
	var headers := NpcGrpcWeb.lower_keys(_http.get_response_headers_as_dictionary())
	var http_code := _http.get_response_code()
	var status: Array = NpcGrpcWeb.status_from(headers)
	if status[0] >= 0:
		# Trailers-only: the status is in the headers and there is no body to read.
		_finish(status[0], status[1])
		return
	if http_code != 200:
		_finish(NpcGrpcWeb.status_for_http(http_code), "HTTP %d from the server" % http_code)
		return
	var content_type := str(headers.get("content-type", ""))
	if not content_type.begins_with("application/grpc-web"):
		_finish(NpcGrpcWeb.Status.UNKNOWN, "not a gRPC-Web response (%s)" % content_type)
		return
	state = State.RECEIVING
	_deadline_ms = Time.get_ticks_msec() + int(_idle_timeout_s * 1000.0)
	_poll_receiving(_http.get_status())


func _poll_receiving(status: HTTPClient.Status) -> void:
	var got_bytes := false
	# Bounded so that one frame never blocks on a fast stream; the rest is read next frame.
	for _i in 64:
		var chunk := _http.read_response_body_chunk()
		if chunk.is_empty():
			break
		got_bytes = true
		for frame in _parser.feed(chunk):
			if frame.is_trailer:
				var trailer: Array = NpcGrpcWeb.status_from(
					NpcGrpcWeb.parse_trailers(frame.payload)
				)
				if trailer[0] < 0:
					_finish(NpcGrpcWeb.Status.INTERNAL, "the trailer frame has no grpc-status")
				else:
					_finish(trailer[0], trailer[1])
				return
			messages_received += 1
			message_received.emit(frame.payload)
			if state == State.DONE:
				return  # a listener cancelled the call
		if not _parser.error.is_empty():
			_finish(NpcGrpcWeb.Status.INTERNAL, _parser.error)
			return
		_http.poll()
	if got_bytes:
		_deadline_ms = Time.get_ticks_msec() + int(_idle_timeout_s * 1000.0)
		return
	match status:
		HTTPClient.STATUS_BODY:
			_check_deadline("waiting for the next message")
		HTTPClient.STATUS_CONNECTED, HTTPClient.STATUS_DISCONNECTED:
			_finish(NpcGrpcWeb.Status.UNAVAILABLE, "the stream ended without a trailer")
		_:
			_fail_connection(status)


func _check_deadline(doing: String) -> void:
	if Time.get_ticks_msec() > _deadline_ms:
		var limit := _connect_timeout_s if state == State.CONNECTING else _idle_timeout_s
		_finish(NpcGrpcWeb.Status.DEADLINE_EXCEEDED, "timed out %s (%.1f s)" % [doing, limit])


func _fail_connection(status: HTTPClient.Status) -> void:
	var why := "lost the connection"
	match status:
		HTTPClient.STATUS_CANT_RESOLVE:
			why = "cannot resolve the host"
		HTTPClient.STATUS_CANT_CONNECT:
			why = "connection refused"
		HTTPClient.STATUS_CONNECTION_ERROR:
			why = (
				"connection failed (refused, reset, or blocked by CORS)"
				if state != State.RECEIVING
				else "the connection broke mid-stream"
			)
		HTTPClient.STATUS_TLS_HANDSHAKE_ERROR:
			why = "TLS handshake failed"
		HTTPClient.STATUS_DISCONNECTED:
			why = "disconnected"
	_finish(NpcGrpcWeb.Status.UNAVAILABLE, why)


func _finish(code: int, message: String) -> void:
	if state == State.DONE:
		return
	state = State.DONE
	status_code = code
	status_message = message
	# Closing drops the connection, so a server still generating sees the disconnect and stops.
	_http.close()
	if code != NpcGrpcWeb.Status.OK:
		status_message = "%s: %s (%s)" % [NpcGrpcWeb.status_name(code), message, _label]
	finished.emit(code, status_message)
