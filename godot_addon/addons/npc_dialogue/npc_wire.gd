class_name NpcWire
extends RefCounted
## Protobuf binary wire-format primitives behind the generated [NpcProto] messages.
##
## Only what the npcserver API needs: varints (int32, int64, uint32, enums, bools), fixed32 floats,
## fixed64 doubles and length-delimited fields (strings, bytes, nested messages). Unknown fields
## are skipped, so an older addon keeps working against a newer server.

## Wire type of varint fields.
const WIRE_VARINT := 0
## Wire type of fixed 64-bit fields (double).
const WIRE_FIXED64 := 1
## Wire type of length-delimited fields (string, bytes, message).
const WIRE_LEN := 2
## Wire type of fixed 32-bit fields (float).
const WIRE_FIXED32 := 5


## Whether a float field with implicit presence is written: any value but +0.0 (protobuf writes
## -0.0, so this does too, keeping the bytes identical).
static func is_set_float(value: float) -> bool:
	if value != 0.0:
		return true
	var probe := PackedByteArray()
	probe.resize(8)
	probe.encode_double(0, value)
	return probe[7] != 0


## Appends fields to [member data] in the binary wire format.
class Writer:
	## The encoded bytes so far.
	var data := PackedByteArray()

	## Appends a raw varint. Negative numbers take ten bytes, as int32/int64 do in protobuf.
	func put_raw_varint(value: int) -> void:
		var v := value
		while true:
			var low := v & 0x7F
			# Logical shift: GDScript's >> keeps the sign, which would loop forever on negatives.
			v = (v >> 7) & 0x01FF_FFFF_FFFF_FFFF
			if v == 0:
				data.append(low)
				return
			data.append(low | 0x80)

	## Appends a field key (field number and wire type).
	func put_tag(field: int, wire_type: int) -> void:
		put_raw_varint((field << 3) | wire_type)

	## Appends an int32/int64/uint32/enum field.
	func put_varint(field: int, value: int) -> void:
		put_tag(field, WIRE_VARINT)
		put_raw_varint(value)

	## Appends a bool field.
	func put_bool(field: int, value: bool) -> void:
		put_tag(field, WIRE_VARINT)
		data.append(1 if value else 0)

	## Appends a float (fixed32, little-endian) field.
	func put_float(field: int, value: float) -> void:
		put_tag(field, WIRE_FIXED32)
		var at := data.size()
		data.resize(at + 4)
		data.encode_float(at, value)

	## Appends a double (fixed64, little-endian) field.
	func put_double(field: int, value: float) -> void:
		put_tag(field, WIRE_FIXED64)
		var at := data.size()
		data.resize(at + 8)
		data.encode_double(at, value)

	## Appends a length-delimited field (bytes or an encoded nested message).
	func put_bytes(field: int, value: PackedByteArray) -> void:
		put_tag(field, WIRE_LEN)
		put_raw_varint(value.size())
		data.append_array(value)

	## Appends a string field, UTF-8 encoded.
	func put_string(field: int, value: String) -> void:
		put_bytes(field, value.to_utf8_buffer())


## Reads fields from bytes. The first problem sets [member failed] and [member error] and moves
## [member pos] to the end, so decoding loops stop and callers check one flag.
class Reader:
	## The bytes being decoded.
	var data: PackedByteArray
	## The next byte to read.
	var pos := 0
	## True once the bytes were found malformed.
	var failed := false
	## What was wrong, for error messages.
	var error := ""

	func _init(bytes: PackedByteArray) -> void:
		data = bytes

	## Marks the input malformed.
	func fail(why: String) -> void:
		if not failed:
			failed = true
			error = "%s at byte %d" % [why, pos]
		pos = data.size()

	## Reads a raw varint as a 64-bit two's-complement int.
	func read_varint() -> int:
		var result := 0
		var shift := 0
		while shift < 70:
			if pos >= data.size():
				fail("truncated varint")
				return 0
			var b := data[pos]
			pos += 1
			result |= (b & 0x7F) << shift
			if (b & 0x80) == 0:
				return result
			shift += 7
		fail("varint longer than 10 bytes")
		return 0

	## Reads an int32 or enum: the low 32 bits, sign-extended.
	func read_int32() -> int:
		var v := read_varint() & 0xFFFF_FFFF
		return v - 0x1_0000_0000 if v >= 0x8000_0000 else v

	## Reads a uint32.
	func read_uint32() -> int:
		return read_varint() & 0xFFFF_FFFF

	## Reads a bool.
	func read_bool() -> bool:
		return read_varint() != 0

	## Reads a float (fixed32).
	func read_float() -> float:
		if pos + 4 > data.size():
			fail("truncated float")
			return 0.0
		var v := data.decode_float(pos)
		pos += 4
		return v

	## Reads a double (fixed64).
	func read_double() -> float:
		if pos + 8 > data.size():
			fail("truncated double")
			return 0.0
		var v := data.decode_double(pos)
		pos += 8
		return v

	## Reads a length prefix and returns where that field ends (checked against the input).
	func read_length_end() -> int:
		var n := read_varint()
		if failed:
			return pos
		if n < 0 or pos + n > data.size():
			fail("length %d runs past the end" % n)
		return pos + n if not failed else pos

	## Reads a length-delimited field as bytes.
	func read_bytes() -> PackedByteArray:
		var end := read_length_end()
		var out := data.slice(pos, end)
		pos = end
		return out

	## Reads a string field (UTF-8).
	func read_string() -> String:
		return read_bytes().get_string_from_utf8()

	## Skips a field this code does not know, by its wire type.
	func skip(tag: int) -> void:
		if tag >> 3 == 0:
			fail("field number 0")
			return
		match tag & 7:
			WIRE_VARINT:
				read_varint()
			WIRE_FIXED64:
				pos += 8
			WIRE_LEN:
				pos = read_length_end()
			WIRE_FIXED32:
				pos += 4
			_:
				fail("unsupported wire type %d" % (tag & 7))
		if pos > data.size():
			fail("truncated field")

	## Checks that a message ended exactly where its length said.
	func expect_end(end: int) -> void:
		if not failed and pos != end:
			fail("message overran its length (ends at %d)" % end)
