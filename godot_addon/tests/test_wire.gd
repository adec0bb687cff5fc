# gdlint: disable=max-returns
extends NpcTestCase
## Protobuf and gRPC-Web framing, with no server: the generated codec against bytes that Python
## protobuf wrote (tests/fixtures/wire), and the frame parser against hand-made bodies.

const FIXTURE_DIR := "res://tests/wire/"


## Every fixture decodes to its expected fields, re-encodes to the same bytes, and encodes the same
## from its Dictionary. The Dictionary encodings are printed (WIRE lines) for Python to decode.
func test_fixtures_match_python_protobuf() -> void:
	var names: Array = config.get("fixtures", [])
	check(names.size() >= 10, "the run config lists the wire fixtures (%d)" % names.size())
	var classes: Dictionary = (NpcProto as Script).get_script_constant_map()
	for fixture: String in names:
		var data := FileAccess.get_file_as_bytes(FIXTURE_DIR + fixture + ".bin")
		var spec: Dictionary = JSON.parse_string(
			FileAccess.get_file_as_string(FIXTURE_DIR + fixture + ".json")
		)
		var cls: Variant = classes.get(spec["message"])
		if not check(cls != null, "%s: NpcProto has no class %s" % [fixture, spec["message"]]):
			continue
		var decoded: Variant = cls.from_bytes(data)
		if not check(decoded != null, "%s: from_bytes returned null" % fixture):
			continue
		var mismatch := _mismatch(decoded.to_dict(), spec["value"], fixture)
		check(mismatch.is_empty(), mismatch)
		if spec["canonical"]:
			check_eq(decoded.to_bytes().hex_encode(), data.hex_encode(), fixture + " re-encoded")
		var built: Variant = cls.from_dict(spec["value"])
		var encoded: PackedByteArray = built.to_bytes()
		if spec["canonical"]:
			check_eq(encoded.hex_encode(), data.hex_encode(), fixture + " encoded from its dict")
		var base64 := Marshalls.raw_to_base64(encoded) if not encoded.is_empty() else "-"
		print("WIRE %s %s" % [fixture, base64])


## Truncated or corrupt bytes are rejected (null), never half-decoded.
func test_malformed_bytes_are_rejected() -> void:
	var good := NpcProto.TalkResponse.new()
	good.delta = NpcProto.ContentDelta.new()
	good.delta.content = "Hello there"
	var data := good.to_bytes()
	check(NpcProto.TalkResponse.from_bytes(data) != null, "the intact message decodes")
	check(NpcProto.TalkResponse.from_bytes(data.slice(0, data.size() - 3)) == null, "truncated")
	var overrun := data.duplicate()
	overrun[1] = 100  # the delta claims more bytes than there are
	check(NpcProto.TalkResponse.from_bytes(overrun) == null, "length past the end")
	check(NpcProto.Usage.from_bytes(PackedByteArray([0x0F])) == null, "wire type 7")
	var long_varint := PackedByteArray([0x08])
	for i in 11:
		long_varint.append(0xFF)
	check(NpcProto.Usage.from_bytes(long_varint) == null, "varint longer than 10 bytes")


## Optional fields keep presence: a zero that was set is sent, an unset one is not.
func test_optional_presence() -> void:
	var request := NpcProto.TalkRequest.new()
	check(not request.has_temperature, "temperature starts unset")
	check_eq(request.to_bytes().size(), 0, "an empty request encodes to nothing")
	request.temperature = 0.0
	check(request.has_temperature, "setting 0 marks temperature set")
	check_eq(request.to_bytes().hex_encode(), "2d00000000", "temperature 0 is on the wire")
	var back := NpcProto.TalkRequest.from_bytes(request.to_bytes())
	check(back.has_temperature and back.temperature == 0.0, "presence survives decoding")


## Oneof members clear each other.
func test_oneof_members_clear_each_other() -> void:
	var message := NpcProto.TalkResponse.new()
	message.delta = NpcProto.ContentDelta.new()
	check_eq(message.get_event_case(), "delta", "delta set")
	message.final = NpcProto.CompletionFinal.new()
	check_eq(message.get_event_case(), "final", "final replaces delta")
	check(message.delta == null, "delta cleared")


## Frames split at any byte boundary come out whole and in order; the trailer is recognised.
func test_frame_parser_handles_any_chunking() -> void:
	var body := NpcGrpcWeb.frame("first".to_utf8_buffer())
	body.append_array(NpcGrpcWeb.frame(PackedByteArray()))
	body.append_array(NpcGrpcWeb.frame("third message".to_utf8_buffer()))
	var trailer := "grpc-status:0\r\ngrpc-message:\r\n".to_utf8_buffer()
	body.append_array(PackedByteArray([0x80, 0, 0, 0, trailer.size()]) + trailer)
	for size: int in [1, 2, 5, 7, body.size()]:
		var parser := NpcGrpcWeb.FrameParser.new()
		var frames: Array[NpcGrpcWeb.Frame] = []
		for at in range(0, body.size(), size):
			frames.append_array(parser.feed(body.slice(at, at + size)))
		if not check_eq(frames.size(), 4, "frames from %d-byte chunks" % size):
			continue
		check_eq(frames[0].payload.get_string_from_utf8(), "first", "first payload")
		check_eq(frames[1].payload.size(), 0, "empty message frame")
		check_eq(frames[2].payload.get_string_from_utf8(), "third message", "third payload")
		check(frames[3].is_trailer and not frames[2].is_trailer, "only the last is a trailer")
		check_eq(parser.pending_bytes(), 0, "nothing left over")


## Trailers and trailers-only headers give the status and the percent-decoded message.
func test_status_from_trailers_and_headers() -> void:
	var trailer := "grpc-status: 5\r\nGrpc-Message: persona 'x' %C3%A9 100%25\r\n".to_utf8_buffer()
	var status := NpcGrpcWeb.status_from(NpcGrpcWeb.parse_trailers(trailer))
	check_eq(status[0], NpcGrpcWeb.Status.NOT_FOUND, "trailer status")
	check_eq(status[1], "persona 'x' é 100%", "trailer message")
	var headers := NpcGrpcWeb.lower_keys({"Grpc-Status": "3", "Grpc-Message": "bad%20text"})
	check_eq(NpcGrpcWeb.status_from(headers), [3, "bad text"], "trailers-only headers")
	check_eq(NpcGrpcWeb.status_from({})[0], -1, "no status")
	check_eq(NpcGrpcWeb.status_name(14), "UNAVAILABLE", "status name")
	check_eq(NpcGrpcWeb.status_for_http(503), NpcGrpcWeb.Status.UNAVAILABLE, "HTTP 503")
	var compressed := NpcGrpcWeb.FrameParser.new()
	compressed.feed(PackedByteArray([1, 0, 0, 0, 1, 0]))
	check(not compressed.error.is_empty(), "a compressed frame is an error")


## Compares a decoded to_dict() with a fixture's value: every expected field matches, every other
## field holds its default. Returns "" or the first difference.
func _mismatch(actual: Variant, expected: Variant, where: String) -> String:
	if expected is Dictionary:
		if not actual is Dictionary:
			return "%s: expected an object, got %s" % [where, actual]
		for key: String in expected:
			var inner := _mismatch(actual.get(key), expected[key], where + "." + key)
			if not inner.is_empty():
				return inner
		for key: String in actual:
			if not expected.has(key) and not _is_default(actual[key]):
				return "%s.%s: expected the default, got %s" % [where, key, actual[key]]
		return ""
	if expected is Array:
		if not actual is Array or actual.size() != expected.size():
			return "%s: expected %s, got %s" % [where, expected, actual]
		for i in expected.size():
			var inner := _mismatch(actual[i], expected[i], "%s[%d]" % [where, i])
			if not inner.is_empty():
				return inner
		return ""
	if expected is String and actual is int:
		# 64-bit ints are strings in the fixtures (a JSON number cannot hold them all).
		return (
			"" if str(actual) == expected else "%s: expected %s, got %d" % [where, expected, actual]
		)
	if expected is float and (actual is float or actual is int):
		var same := is_equal_approx(float(actual), expected)
		if same and expected == 0.0:
			same = NpcWire.is_set_float(expected) == NpcWire.is_set_float(float(actual))
		return "" if same else "%s: expected %s, got %s" % [where, expected, actual]
	if typeof(actual) != typeof(expected) or actual != expected:
		return "%s: expected %s, got %s" % [where, expected, actual]
	return ""


func _is_default(value: Variant) -> bool:
	match typeof(value):
		TYPE_NIL:
			return true
		TYPE_BOOL:
			return not value
		TYPE_INT, TYPE_FLOAT:
			return value == 0
		TYPE_STRING, TYPE_ARRAY, TYPE_PACKED_BYTE_ARRAY:
			return value.is_empty()
	return false
