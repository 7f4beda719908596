"""FETCH response items from stored data (RFC 9051 §6.4.5, §7.5.2; RFC 3516; RFC 7162; RFC 8474;
RFC 8514).

ENVELOPE, BODY and BODYSTRUCTURE come pre-rendered from the message's stored MIME summary
(`postkeep.mime.summary`); BODY[section] / BINARY[section] cut the raw message at the part
offsets the summary records. Which items need the summary or the message octets is decided
up front (`needs`), so the session reads only what a FETCH asks for.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
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


def internaldate(when: float) -> str:
    """date-time (RFC 9051 §9): "17-Jul-1996 02:44:25 -0700", in UTC."""
    dt = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return dt.strftime("%d-%b-%Y %H:%M:%S +0000")


def _section_bytes(section: Section, root: Part | None, data: bytes) -> bytes | None:
    if root is None:  # only BODY[] and RFC822 are fetched without the summary
        return data
    part = root if not section.part else find_part(root, section.part)
    if part is None:
        return None
    text = section.text
    if text == "MIME":
        return data[part.header_start : part.body_start]
    if section.part and text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
        if part.type != "message" or not part.children:
            return None
        part = part.children[0]
    if text is None:
        if not section.part:
            return data
        return data[part.body_start : part.body_end]
    if text == "HEADER":
        return data[part.header_start : part.body_start]
    if text == "TEXT":
        return data[part.body_start : part.body_end]
    return header_fields(data, part, section.fields, exclude=text == "HEADER.FIELDS.NOT")


def _partial(value: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return value
    start, length = partial
    return value[start : start + length]


def _binary(section: Section, root: Part, data: bytes) -> bytes | None:
    if not section.part:
        return data
    part = find_part(root, section.part)
    if part is None:
        return None
    if part.children:  # BINARY of a multipart or message part: its octets as they are
        return data[part.body_start : part.body_end]
    try:
        return decoded_body(data, part)
    except ValueError:
        raise UnknownCte from None


def render_items(
    info: MessageInfo,
    atts: Sequence[FetchAtt],
    summary: Summary | None,
    data: bytes | None,
    *,
    uid: bool,
    modseq: bool,
    recent: bool = False,
) -> bytes:
    """The parenthesized FETCH data of one message (without "* n FETCH ")."""
    items: list[bytes] = []
    seen: set[str] = set()

    def add(name: str, value: bytes) -> None:
        if name not in seen:
            seen.add(name)
            items.append(name.encode() + b" " + value)

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
            add(name, render.literal(_section_bytes(section, root, data) or b""))
        elif name == "BODY":
            assert data is not None and att.section is not None
            value = _section_bytes(att.section, root, data)
            label = f"BODY[{att.section}]"
            if att.partial is not None:
                label += f"<{att.partial[0]}>"
            add(label, b"NIL" if value is None else render.literal(_partial(value, att.partial)))
        elif name in ("BINARY", "BINARY.SIZE"):
            assert data is not None and root is not None and att.section is not None
            value = _binary(att.section, root, data)
            spec = ".".join(map(str, att.section.part))
            if name == "BINARY.SIZE":
                add(f"BINARY.SIZE[{spec}]", b"NIL" if value is None else b"%d" % len(value))
            else:
                label = f"BINARY[{spec}]"
                if att.partial is not None:
                    label += f"<{att.partial[0]}>"
                body = (
                    b"NIL"
                    if value is None
                    else render.literal(_partial(value, att.partial), binary=True)
                )
                add(label, body)
    if modseq:
        add("MODSEQ", b"(%d)" % info.modseq)
    return b"(" + b" ".join(items) + b")"
