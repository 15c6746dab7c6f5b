"""Text from outside made storable: NUL characters (which PostgreSQL's text and jsonb refuse) read as U+FFFD."""

from builds import registry
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


def test_image_labels_from_the_registry_are_storable():
    facts = registry.parse_inspect('{"Labels": {"a\\u0000": "b\\u0000"}, "Os": "li\\u0000nux", "Layers": []}')
    assert facts.labels == {"a\ufffd": "b\ufffd"} and facts.os == "li\ufffdnux"
