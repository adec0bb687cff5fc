"""StreamDecoder: streamed text never splits a UTF-8 character and never shows (part of) a stop string."""

from __future__ import annotations

from npcserver.engine.common import StreamDecoder


def test_stream_decoder_never_splits_a_character() -> None:
    dec = StreamDecoder()
    clef = "𝄞".encode()  # 4 bytes
    out = [dec.push(b"a" + clef[:1]), dec.push(clef[1:3]), dec.push(clef[3:] + "é".encode()[:1]), dec.push(b"\xa9")]
    assert out == ["a", "", "𝄞", "é"]
    assert dec.flush() == ""


def test_stream_decoder_holds_back_a_possible_stop_string() -> None:
    dec = StreamDecoder(("\nPlayer:",))
    assert dec.push(b"Aye.") == "Aye."
    assert dec.push(b"\nPla") == ""  # could be the start of the stop string
    assert dec.push(b"ces") == "\nPlaces"  # it was not
    assert dec.push(b" to go.\nPlayer: hi") == " to go."
    assert dec.stopped


def test_stream_decoder_flushes_held_text_and_incomplete_bytes_at_the_end() -> None:
    dec = StreamDecoder(("END",))
    assert dec.push(b"fin E") == "fin "
    assert dec.push("€".encode()[:2]) == ""
    assert dec.flush() == "E\ufffd"
