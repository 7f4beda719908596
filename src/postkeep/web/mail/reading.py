"""What the reading view shows of one message, read from its MIME summary and by byte range.

The part tree comes from the message's summary (`postkeep.mime.summary`, computed at
delivery), so nothing is parsed but the header; the header, the shown text part, the HTML part
and the inline images are read from the store by their byte ranges
(`MailStore.open_message`: piece by piece, each piece decrypted when asked for), their
transfer encoding undone as they stream (`postkeep.mime.decoding`), each within a cap
(MAX_TEXT, MAX_HTML, MAX_INLINE): a 100 MB message costs the reading view what its first
megabytes cost. Attachments stream the same way to the download (`stream_part`).

Sections are numbered as IMAP numbers them (RFC 9051 §6.4.5, `postkeep.mime.structure.
find_part`); an attached message (message/rfc822) is one attachment, downloaded whole.
"""

from __future__ import annotations

import contextlib
import datetime
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from postkeep.imap.content import MessageContent, decode_bytes, decode_header_text
from postkeep.mime.decoding import decoder
from postkeep.mime.structure import Part
from postkeep.store.api import MessageReader
from postkeep.web.mail.sanitize import Inline

MAX_HEADER: Final = 256 << 10  # octets of the header shown
MAX_TEXT: Final = 1 << 20  # octets of a text part shown
MAX_HTML: Final = 2 << 20  # octets of HTML sanitised and framed
MAX_INLINE: Final = 4 << 20  # octets of inline images embedded in the frame, all together
#: types an attachment keeps when downloaded; any other is sent as application/octet-stream
#: (a browser never renders HTML, SVG, XML or script from the server's origin)
SAFE_TYPES: Final = frozenset({
    "text/plain", "text/csv", "application/pdf", "application/zip", "application/gzip",
    "image/png", "image/jpeg", "image/gif", "image/webp", "audio/mpeg", "audio/ogg",
    "video/mp4", "video/webm", "application/octet-stream", "message/rfc822",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/msword", "application/vnd.ms-excel", "text/calendar",
})  # fmt: skip
INLINE_IMAGES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class Attachment:
    section: str
    name: str
    content_type: str
    size: int  # octets as stored (transfer-encoded)


@dataclass(slots=True)
class Reading:
    """The reading view's content (header fields decoded; bodies capped)."""

    sender: str
    to: str
    cc: str
    date: str
    subject: str
    text: str | None = None
    text_cut: bool = False
    html: Part | None = None
    attachments: list[Attachment] = field(default_factory=list)


def leaves(root: Part) -> list[tuple[str, Part]]:
    """(section, part) of every leaf part, in order; an attached message counts as one."""
    out: list[tuple[str, Part]] = []
    if root.type != "multipart":
        return [("1", root)]
    work: list[tuple[tuple[int, ...], Part]] = [((), root)]
    while work:
        path, part = work.pop()
        if part.type == "multipart":
            work.extend(((*path, n), child)
                        for n, child in reversed(list(enumerate(part.children, 1))))
        else:
            out.append((".".join(map(str, path)), part))
    return out


def find_section(root: Part, section: str) -> Part | None:
    """The leaf part named by `section` (as `leaves` numbers them), None if there is none."""
    return dict(leaves(root)).get(section)


def content_type(part: Part) -> str:
    return f"{part.type}/{part.subtype}".lower()


def param(part: Part, name: str) -> str | None:
    return next((v for k, v in part.params if k.lower() == name), None)


def file_name(part: Part, section: str) -> str:
    """The part's file name (Content-Disposition filename, else Content-Type name; RFC 2231
    decoded by the structure parser, RFC 2047 words decoded here), or one made up."""
    found = None
    if part.disposition is not None:
        found = next((v for k, v in part.disposition[1] if k.lower() == "filename"), None)
    name = found or param(part, "name")
    if name:
        cleaned = "".join(c for c in decode_header_text(name) if c.isprintable())
        cleaned = cleaned.replace("/", "_").replace("\\", "_").strip(". ")
        if cleaned:
            return cleaned[:200]
    extension = ".eml" if part.type == "message" else ".bin"
    return f"part-{section}{extension}"


def content_disposition(name: str) -> str:
    """``attachment`` with the RFC 6266 §4.3 ``filename*`` (RFC 8187 UTF-8) and an ASCII
    ``filename`` for old clients."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    quoted = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def download_type(part: Part) -> str:
    kind = content_type(part)
    return kind if kind in SAFE_TYPES else "application/octet-stream"


async def decoded(reader: MessageReader, part: Part, limit: int) -> AsyncIterator[bytes]:
    """The body of `part` with its transfer encoding undone, as it streams; at most about
    `limit` octets of it raw (0: all of it). Undecodable base64 ends it."""
    try:
        dec = decoder(part.encoding)
    except ValueError:
        dec = decoder("7BIT")  # an unknown encoding: the octets as they are
    end = part.body_end if limit <= 0 else min(part.body_end, part.body_start + limit)
    async with contextlib.aclosing(reader.pieces(part.body_start, end)) as pieces:
        async for piece in pieces:
            try:
                yield dec.feed(piece)
            except ValueError:
                return
    with contextlib.suppress(ValueError):
        yield dec.finish()


async def read_text(reader: MessageReader, part: Part, limit: int) -> tuple[str, bool]:
    """The part's text (its charset, else UTF-8 or Latin-1) and whether it was cut at
    `limit` raw octets."""
    data = b"".join([chunk async for chunk in decoded(reader, part, limit)])
    return decode_bytes(data, param(part, "charset")), part.body_end - part.body_start > limit


def _first(content: MessageContent, name: str) -> str:
    values = content.header_values(name)
    return " ".join(values[0].split()) if values else ""


def _date(content: MessageContent, fallback: float) -> str:
    sent = content.sent_time()
    when = datetime.datetime.fromtimestamp(fallback if sent is None else sent, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


async def reading(reader: MessageReader, root: Part, internaldate: float) -> Reading:
    """The reading view of the open message whose part tree is `root`."""
    header = b"".join([p async for p in reader.pieces(0, min(root.body_start, MAX_HEADER))])
    content = MessageContent.parse(header)
    view = Reading(_first(content, "From"), _first(content, "To"), _first(content, "Cc"),
                   _date(content, internaldate), _first(content, "Subject"))
    plain: Part | None = None
    for section, part in leaves(root):
        disposition = part.disposition[0].lower() if part.disposition else ""
        kind = content_type(part)
        if disposition != "attachment" and kind == "text/plain" and plain is None:
            plain = part
        elif disposition != "attachment" and kind == "text/html" and view.html is None:
            view.html = part
        elif not (part.id and disposition != "attachment" and kind in INLINE_IMAGES):
            view.attachments.append(Attachment(section, file_name(part, section), kind,
                                               part.body_end - part.body_start))
    if plain is not None:
        view.text, view.text_cut = await read_text(reader, plain, MAX_TEXT)
    return view


async def inline_images(reader: MessageReader, root: Part) -> dict[str, Inline]:
    """The message's inline images by Content-ID, within MAX_INLINE octets in all."""
    out: dict[str, Inline] = {}
    left = MAX_INLINE
    for _section, part in leaves(root):
        kind = content_type(part)
        if not part.id or kind not in INLINE_IMAGES:
            continue
        size = part.body_end - part.body_start
        if size > left:
            continue
        left -= size
        data = b"".join([chunk async for chunk in decoded(reader, part, 0)])
        out[part.id.strip().strip("<>")] = Inline(part.id, kind, data)
    return out
