class_name NpcGrpcWeb
extends RefCounted
## gRPC-Web (binary) framing: request frames, the response frame parser, trailers and status codes.
##
## A frame is one flag byte, a 4-byte big-endian length and the payload. Flag 0x80 marks the
## trailer frame, whose payload is HTTP/1 header text ([code]grpc-status:0\r\n[/code]). An error
## before any message may come "trailers-only": grpc-status in the HTTP headers and no body.

## gRPC status codes (grpc/doc/statuscodes.md).
enum Status {
	OK = 0,
	CANCELLED = 1,
	UNKNOWN = 2,
	INVALID_ARGUMENT = 3,
	DEADLINE_EXCEEDED = 4,
	NOT_FOUND = 5,
	ALREADY_EXISTS = 6,
	PERMISSION_DENIED = 7,
	RESOURCE_EXHAUSTED = 8,
	FAILED_PRECONDITION = 9,
	ABORTED = 10,
	OUT_OF_RANGE = 11,
	UNIMPLEMENTED = 12,
	INTERNAL = 13,
	UNAVAILABLE = 14,
	DATA_LOSS = 15,
	UNAUTHENTICATED = 16,
}

## The request and response content type (binary gRPC-Web).
const CONTENT_TYPE := "application/grpc-web+proto"
## Flag bit of a trailer frame.
const TRAILER_FLAG := 0x80
## Flag bit of a compressed frame (never requested, so never expected).
const COMPRESSED_FLAG := 0x01


## Wraps one encoded message in a data frame.
static func frame(message: PackedByteArray) -> PackedByteArray:
	var n := message.size()
	var out := PackedByteArray([0, (n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF])
	out.append_array(message)
	return out


## The name of a status code ("NOT_FOUND"), or "STATUS_<n>" for an unknown one.
static func status_name(code: int) -> String:
	var key: Variant = Status.find_key(code)
	return str(key) if key != null else "STATUS_%d" % code


## Parses a trailer frame's payload into a Dictionary with lowercase keys.
static func parse_trailers(payload: PackedByteArray) -> Dictionary:
	var out := {}
	for line in payload.get_string_from_utf8().split("\r\n", false):
		var colon := line.find(":")
		if colon > 0:
			out[line.substr(0, colon).strip_edges().to_lower()] = (
				line.substr(colon + 1).strip_edges()
			)
	return out


## Reads grpc-status and grpc-message (percent-decoded) from trailers or response headers.
## Returns [code][status, message][/code], or [code][-1, ""][/code] when there is no grpc-status.
static func status_from(headers: Dictionary) -> Array:
	if not headers.has("grpc-status"):
		return [-1, ""]
	var text := str(headers["grpc-status"])
	var code := int(text) if text.is_valid_int() else Status.UNKNOWN
	return [code, str(headers.get("grpc-message", "")).uri_decode()]


## The status for an HTTP error without grpc-status (gRPC's HTTP-to-status mapping).
static func status_for_http(http_code: int) -> int:
	match http_code:
		400:
			return Status.INTERNAL
		401:
			return Status.UNAUTHENTICATED
		403:
			return Status.PERMISSION_DENIED
		404:
			return Status.UNIMPLEMENTED
		429, 502, 503, 504:
			return Status.UNAVAILABLE
	return Status.UNKNOWN


## Lower-cases the keys of [method HTTPClient.get_response_headers_as_dictionary]'s result.
static func lower_keys(headers: Dictionary) -> Dictionary:
	var out := {}
	for key: Variant in headers:
		out[str(key).to_lower()] = headers[key]
	return out


## One response frame.
class Frame:
	## True for the trailer frame.
	var is_trailer: bool
	## The message bytes, or the trailer text.
	var payload: PackedByteArray

	func _init(trailer: bool, bytes: PackedByteArray) -> void:
		is_trailer = trailer
		payload = bytes


## Splits a response body into frames, whatever the chunk boundaries.
class FrameParser:
	## Set when the body is malformed (a compressed frame); the parser then yields nothing more.
	var error := ""
	var _buffer := PackedByteArray()

	## Adds bytes as they arrive; returns every frame they complete, in order.
	func feed(chunk: PackedByteArray) -> Array[Frame]:
		var frames: Array[Frame] = []
		if not error.is_empty():
			return frames
		_buffer.append_array(chunk)
		var at := 0
		while _buffer.size() - at >= 5:
			var flags := _buffer[at]
			var n := (
				(_buffer[at + 1] << 24)
				| (_buffer[at + 2] << 16)
				| (_buffer[at + 3] << 8)
				| _buffer[at + 4]
			)
			if _buffer.size() - at - 5 < n:
				break
			if flags & COMPRESSED_FLAG:
				error = "the server sent a compressed frame, which this client never asks for"
				break
			frames.append(Frame.new((flags & TRAILER_FLAG) != 0, _buffer.slice(at + 5, at + 5 + n)))
			at += 5 + n
		_buffer = _buffer.slice(at)
		return frames

	## Bytes received that do not yet form a whole frame.
	func pending_bytes() -> int:
		return _buffer.size()
