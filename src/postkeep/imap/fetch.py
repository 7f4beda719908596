"""FETCH response items from stored data (RFC 9051 §6.4.5, §7.5.2; RFC 3516; RFC 7162; RFC 8474;
RFC 8514).

ENVELOPE, BODY and BODYSTRUCTURE come pre-rendered from the message's stored MIME summary
(`postkeep.mime.summary`); BODY[section] / BINARY[section] cut the raw message at the part
offsets the summary records. Which items need the summary or the message octets is decided
up front (`needs`), so the session reads only what a FETCH asks for.

A message too large to hold (`Streamed`) is rendered with a `Stream` in place of each literal
that carries its octets: the range of the message it is cut from, with BINARY's transfer
encoding to remove and the partial range (RFC 9051 §6.4.5 `<start.length>`) to keep. The
session reads those piece by piece from the store as it writes them (`postkeep.imap.messages`).
Only HEADER.FIELDS (and .NOT) need octets in hand: the header they are cut from, read ahead
(`header_ranges`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postkeep.imap.flags import flag_list
from postkeep.imap.wire import render
from postkeep.imap.wire.commands import FetchAtt, Section
from postkeep.mime.structure import Part, decoded_body, find_part, header_fields
from postkeep.mime.summary import Summary
from postkeep.store.api import MessageInfo

_SUMMARY_ITEMS = frozenset(
    {"ENVELOPE", "BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE", "RFC822.HEADER", "RFC822.TEXT"}
)
_CONTENT_ITEMS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.SIZE"})


class UnknownCte(Exception):
    """BINARY of a part whose Content-Transfer-Encoding cannot be decoded (RFC 3516 §4.3)."""


@dataclass(frozen=True, slots=True)
class Needs:
    summary: bool
    content: bool
    header_only: bool  # the octets needed are all in the top-level header
    sets_seen: bool  # a non-PEEK body item: implicitly sets \Seen (RFC 9051 §6.4.5)


def needs(atts: Sequence[FetchAtt]) -> Needs:
    summary = content = sets_seen = False
    header_only = True
    for att in atts:
        if att.name in _SUMMARY_ITEMS or (
            att.section is not None and (att.section.part or att.section.text is not None)
        ):
            summary = True  # part offsets, or where the top-level header ends
        if att.name in _CONTENT_ITEMS or att.section is not None:
            content = True
            top_header = att.name == "RFC822.HEADER" or (
                att.section is not None
                and not att.section.part
                and att.section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
            )
            header_only = header_only and top_header
        if not att.peek and (
            att.name in ("RFC822", "RFC822.TEXT")
            or (att.name in ("BODY", "BINARY") and att.section)
        ):
            sets_seen = True
    return Needs(summary, content, content and header_only, sets_seen)


@dataclass(frozen=True, slots=True)
class Streamed:
    """A message whose octets are not in hand: its `size`, and the headers HEADER.FIELDS
    items need, read ahead (`header_ranges`), by their start offset."""

    size: int
    headers: Mapping[int, bytes] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stream:
    """A literal to read from the store as it is written: octets [start, end) of the message,
    with `encoding` removed (BINARY: "BASE64", "QUOTED-PRINTABLE"; None: as stored), then cut
    to `partial` (start, length). `binary`: BINARY, sent as literal8 when it holds NUL (RFC
    3516 §4.3); `size_only`: BINARY.SIZE, the decoded length as a number, not a literal."""

    start: int
    end: int
    encoding: str | None = None
    partial: tuple[int, int] | None = None
    binary: bool = False
    size_only: bool = False


Piece = bytes | Stream


def internaldate(when: float) -> str:
    """date-time (RFC 9051 §9): "17-Jul-1996 02:44:25 -0700", in UTC."""
    dt = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return dt.strftime("%d-%b-%Y %H:%M:%S +0000")


def _section_span(section: Section, root: Part | None, size: int) -> tuple[int, int] | Part | None:
    """The octets of BODY[section]: a range of the message, the part whose header
    HEADER.FIELDS (.NOT) filters, or None when the message has no such part."""
    if root is None:  # only BODY[] and RFC822 are fetched without the summary
        return 0, size
    part = root if not section.part else find_part(root, section.part)
    if part is None:
        return None
    text = section.text
    if text == "MIME":
        return part.header_start, part.body_start
    if section.part and text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
        if part.type != "message" or not part.children:
            return None
        part = part.children[0]
    if text is None:
        return (0, size) if not section.part else (part.body_start, part.body_end)
    if text == "HEADER":
        return part.header_start, part.body_start
    if text == "TEXT":
        return part.body_start, part.body_end
    return part


def header_ranges(atts: Sequence[FetchAtt], root: Part) -> list[tuple[int, int]]:
    """The headers the HEADER.FIELDS (.NOT) items of `atts` filter, as message ranges: what
    a `Streamed` message needs in hand."""
    out = []
    for att in atts:
        if att.section is not None and att.section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            part = _section_span(att.section, root, 0)
            if isinstance(part, Part):
                out.append((part.header_start, part.body_start))
    return list(dict.fromkeys(out))


def _section(section: Section, root: Part | None, data: bytes | Streamed) -> Piece | None:
    size = data.size if isinstance(data, Streamed) else len(data)
    span = _section_span(section, root, size)
    if span is None:
        return None
    exclude = section.text == "HEADER.FIELDS.NOT"
    if isinstance(span, Part):
        if isinstance(data, bytes):
            return header_fields(data, span, section.fields, exclude=exclude)
        header = data.headers[span.header_start]  # the part's header alone, offsets from 0
        alone = dataclasses.replace(span, header_start=0, body_start=len(header))
        return header_fields(header, alone, section.fields, exclude=exclude)
    start, end = span
    if isinstance(data, Streamed):
        return Stream(start, end)
    return data if (start, end) == (0, size) else data[start:end]


def _partial(value: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return value
    start, length = partial
    return value[start : start + length]


def _binary(section: Section, root: Part, data: bytes | Streamed) -> Piece | None:
    if not section.part:
        return Stream(0, data.size, binary=True) if isinstance(data, Streamed) else data
    part = find_part(root, section.part)
    if part is None:
        return None
    # BINARY of a multipart or message part, or of an unencoded one: the octets as stored
    encoded = not part.children and part.encoding not in ("7BIT", "8BIT", "BINARY")
    if encoded and part.encoding not in ("BASE64", "QUOTED-PRINTABLE"):
        raise UnknownCte
    if isinstance(data, Streamed):
        encoding = part.encoding if encoded else None
        return Stream(part.body_start, part.body_end, encoding, binary=True)
    if not encoded:
        return data[part.body_start : part.body_end]
    try:
        return decoded_body(data, part)
    except ValueError:
        raise UnknownCte from None


def _literal(value: Piece, partial: tuple[int, int] | None, *, binary: bool = False) -> Piece:
    if isinstance(value, Stream):
        return dataclasses.replace(value, partial=partial)
    return render.literal(_partial(value, partial), binary=binary)


def render_items(
    info: MessageInfo,
    atts: Sequence[FetchAtt],
    summary: Summary | None,
    data: bytes | Streamed | None,
    *,
    uid: bool,
    modseq: bool,
    recent: bool = False,
) -> list[Piece]:
    """The parenthesized FETCH data of one message (without "* n FETCH "): octets, and for a
    `Streamed` message the literals to stream in their places. UnknownCte for a BINARY item
    whose transfer encoding cannot be removed."""
    items: list[tuple[bytes, Piece]] = []
    seen: set[str] = set()

    def add(name: str, value: Piece) -> None:
        if name not in seen:
            seen.add(name)
            items.append((name.encode() + b" ", value))

    if uid:
        add("UID", b"%d" % info.uid)
    root = summary.tree if summary is not None and data is not None else None
    for att in atts:
        name = att.name
        if name == "UID":
            add("UID", b"%d" % info.uid)
        elif name == "FLAGS":
            add("FLAGS", flag_list(info.flags, info.keywords, recent=recent))
        elif name == "INTERNALDATE":
            add("INTERNALDATE", b'"' + internaldate(info.internaldate).encode() + b'"')
        elif name == "RFC822.SIZE":
            add("RFC822.SIZE", b"%d" % info.size)
        elif name == "MODSEQ":
            add("MODSEQ", b"(%d)" % info.modseq)
        elif name == "SAVEDATE":
            when = info.savedate
            add("SAVEDATE", b'"%s"' % internaldate(when).encode() if when else b"NIL")
        elif name == "EMAILID":
            add("EMAILID", b"(M" + info.blob_id[:24].encode() + b")")
        elif name == "THREADID":
            add("THREADID", b"NIL")
        elif name == "ENVELOPE":
            assert summary is not None
            add("ENVELOPE", summary.envelope.encode("utf-8", "surrogateescape"))
        elif name == "BODYSTRUCTURE" or (name == "BODY" and att.section is None):
            assert summary is not None
            text = summary.bodystructure if name == "BODYSTRUCTURE" else summary.body
            add(name, text.encode("utf-8", "surrogateescape"))
        elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            assert data is not None
            section = Section(text={"RFC822": None, "RFC822.HEADER": "HEADER"}.get(name, "TEXT"))
            add(name, _literal(_section(section, root, data) or b"", None))
        elif name == "BODY":
            assert data is not None and att.section is not None
            value = _section(att.section, root, data)
            label = f"BODY[{att.section}]"
            if att.partial is not None:
                label += f"<{att.partial[0]}>"
            add(label, b"NIL" if value is None else _literal(value, att.partial))
        elif name in ("BINARY", "BINARY.SIZE"):
            assert data is not None and root is not None and att.section is not None
            value = _binary(att.section, root, data)
            spec = ".".join(map(str, att.section.part))
            if name == "BINARY.SIZE":
                if isinstance(value, Stream):
                    size: Piece = dataclasses.replace(value, size_only=True)
                    if value.encoding is None:
                        size = b"%d" % (value.end - value.start)
                else:
                    size = b"NIL" if value is None else b"%d" % len(value)
                add(f"BINARY.SIZE[{spec}]", size)
            else:
                label = f"BINARY[{spec}]"
                if att.partial is not None:
                    label += f"<{att.partial[0]}>"
                body = b"NIL" if value is None else _literal(value, att.partial, binary=True)
                add(label, body)
    if modseq:
        add("MODSEQ", b"(%d)" % info.modseq)
    pieces: list[Piece] = [b"("]
    for n, (label, value) in enumerate(items):
        pieces += [b" " + label if n else label, value]
    pieces.append(b")")
    return _joined(pieces)


def _joined(pieces: list[Piece]) -> list[Piece]:
    """Adjacent octets in one piece."""
    out: list[Piece] = []
    run: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, Stream):
            if run:
                out.append(b"".join(run))
                run = []
            out.append(piece)
        else:
            run.append(piece)
    if run:
        out.append(b"".join(run))
    return out
