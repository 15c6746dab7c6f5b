"""Text from outside made storable: NUL characters (which PostgreSQL's text and jsonb refuse) read as U+FFFD."""

from portal.text import decoded, first_nul, storable


def test_nul_characters_become_replacement_characters_at_any_depth_keys_included():
    value = {"a\x00": ["x\x00y", ("\x00",), 5, None], "plain": "text"}
    assert storable(value) == {"a\ufffd": ["x\ufffdy", ("\ufffd",), 5, None], "plain": "text"}
    clean = {"a": ["b"]}
    assert storable("clean") == "clean" and storable(clean) == clean and storable(b"\x00") == b"\x00"


def test_bytes_a_tool_printed_decode_to_storable_text():
    assert decoded(b"ok\x00\xff!") == "ok\ufffd\ufffd!"


def test_the_first_nul_is_found_by_line_and_column():
    assert first_nul("ab\ncd\x00") == (2, 3)
    assert first_nul("\x00") == (1, 1)
    assert first_nul("none") is None

