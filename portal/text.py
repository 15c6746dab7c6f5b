"""Text from outside the portal, made storable.

PostgreSQL's `text` cannot hold a NUL character, and `jsonb` refuses the `\\u0000` escape: one NUL in what a host, a
builder, a registry or a webhook sent would fail the INSERT with a DataError (SQLite takes it, so only production
sees it). Every path that stores such text passes it through `storable()`, which shows each NUL as U+FFFD (the
replacement character, as for any byte that is not UTF-8). Where the original bytes matter (a host's unreadable
`bootc status`), they are kept as bytes beside the text.
"""

NUL = "\x00"
REPLACEMENT = "\ufffd"


def storable(value):
    """`value` with every NUL in its strings (dictionary keys included, at any depth) replaced by U+FFFD. Other types
    come back as they are; a value without NULs comes back unchanged (the same object)."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(storable(item) for item in value)
    return value


def decoded(data: bytes) -> str:
    """Bytes a tool printed, as storable text: UTF-8, each undecodable byte and each NUL shown as U+FFFD."""
    return storable(data.decode("utf-8", errors="replace"))


def first_nul(text: str) -> tuple[int, int] | None:
    """(line, column), both from 1, of the first NUL in `text`, or None."""
    index = text.find(NUL)
    if index < 0:
        return None
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1
