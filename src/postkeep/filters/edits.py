"""Changes a content filter asks for, and their application to a message's text.

A filter (a milter: `filters.milter`) may add, insert, change and delete header fields
(RFC 5322 §2.2, §3.6: a field is a name, a colon and a value that may be folded with CRLF
followed by WSP), replace the body, and add or remove envelope recipients. `Changes` holds
them in that typed form; `apply_text` applies the header and body changes to a message's
text, a spooled one too (its head replaced, the rest read from the spool as before); the
recipient changes are the pipeline's (`delivery.inbound`), which resolves added recipients
as RCPT TO would.

A field to write is checked first (`check_field`): a name of printable ASCII without a
colon, a value without NUL, bare CR or LF, where every CRLF is followed by WSP. A filter can
thus never end the header section early or smuggle in a field of its own.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from postkeep.mailauth.dkim.canon import parse_header_fields, split_message
from postkeep.store.spool import MessageData, SpooledText

MAX_NAME = 128
_NAME = re.compile(rb"[!-9;-~]{1,128}")  # printable ASCII but ":" (RFC 5322 §3.6.8 ftext)
_BAD_BREAK = re.compile(rb"\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])")


class HeaderOp(enum.Enum):
    ADD = "add"  # after the last field
    INSERT = "insert"  # before the `index`-th field (0: the first); past the last: added
    CHANGE = "change"  # the `index`-th field named `name` (1: the first); none: added
    DELETE = "delete"  # the `index`-th field named `name` (1: the first), if there is one


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """One change to the header section. `value` is what follows the colon as it is to be
    written, its leading space included, folded with CRLF + WSP (`check_field`); "" for
    DELETE. Both are text; octets that are not UTF-8 are kept (surrogateescape)."""

    op: HeaderOp
    name: str
    value: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Changes:
    """What a filter asks to change: header fields (in order), the body (None: kept; CRLF
    lines), envelope recipients added and removed (addresses)."""

    headers: tuple[HeaderEdit, ...] = ()
    body: bytes | None = None
    add_recipients: tuple[str, ...] = ()
    remove_recipients: tuple[str, ...] = ()

    @property
    def text(self) -> bool:
        """Whether the message's text changes."""
        return bool(self.headers) or self.body is not None


NO_CHANGES = Changes()


def _octets(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def check_field(name: str, value: str) -> None:
    """ValueError unless "`name`:`value`" is one well-formed field (see the module's text)."""
    raw_name, raw = _octets(name), _octets(value)
    if not _NAME.fullmatch(raw_name):
        raise ValueError(f"invalid header field name {name[:40]!r}")
    if b"\0" in raw or _BAD_BREAK.search(raw) or raw.endswith(b"\r\n"):
        raise ValueError(f"invalid value for header field {name!r}")


def split_head(data: MessageData, limit: int) -> tuple[bytes, int]:
    """The header block of `data` (its fields with their CRLFs, within `limit` octets) and
    where the body starts (after the empty line; the end when there is none)."""
    head = bytes(data[: limit + 4])
    block, _ = split_message(head)
    if len(block) > limit:
        raise ValueError(f"header section over {limit} octets")
    start = len(block) + 2 if head[len(block) : len(block) + 2] == b"\r\n" else len(block)
    return block, min(start, len(data))


def edit_header_block(block: bytes, edits: tuple[HeaderEdit, ...]) -> bytes:
    """`block` with `edits` applied in order. Indexes count the block's fields as the
    filter was sent them (lines that are no field are kept where they are, uncounted)."""
    lines = [(f.key, f.raw) for f in parse_header_fields(block)]
    for edit in edits:
        key = edit.name.lower()
        field = (key, _octets(f"{edit.name}:{edit.value}\r\n"))
        if edit.op is HeaderOp.ADD:
            lines.append(field)
        elif edit.op is HeaderOp.INSERT:
            fields = [i for i, (k, _) in enumerate(lines) if k]
            lines.insert(fields[edit.index] if edit.index < len(fields) else len(lines), field)
        else:
            named = [i for i, (k, _) in enumerate(lines) if k == key]
            at = max(edit.index, 1) - 1
            if at < len(named):
                if edit.op is HeaderOp.DELETE:
                    del lines[named[at]]
                else:
                    lines[named[at]] = field
            elif edit.op is HeaderOp.CHANGE:
                lines.append(field)
    return b"".join(raw for _, raw in lines)


def apply_text(data: MessageData, changes: Changes, limit: int) -> MessageData:
    """`data` with the header and body `changes` applied; `limit`: the header section's
    size at most (the pipeline's ``limits`` stage checked it)."""
    block, _ = split_head(data, limit)
    new_block = edit_header_block(block, changes.headers) if changes.headers else block
    if changes.body is not None:
        return new_block + b"\r\n" + changes.body
    if new_block == block:
        return data
    if isinstance(data, SpooledText):
        return data.with_head(new_block, len(block))
    return new_block + bytes(data[len(block) : len(data)])
