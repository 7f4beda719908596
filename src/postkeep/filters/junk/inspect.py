"""Bounded looks inside attachments: zip archives listed, image headers read; nothing is
extracted or decoded.

Zip (PKWARE APPNOTE 6.3.10, §4.3.12 central directory): the stdlib's `zipfile` reads the
central directory only (`infolist`), at most `MAX_ENTRIES` entries; an entry whose general
purpose flag bit 0 is set is encrypted (§4.4.4). An entry that is itself a zip is opened in
turn from its stored octets when it is stored uncompressed or small enough to inflate
(`MAX_NESTED` octets, read through `zipfile`'s bounded reader), down to `MAX_DEPTH` levels.

Images: the dimensions of PNG (ISO/IEC 15948 §11.2.2 IHDR), GIF (GIF89a §18 logical screen)
and JPEG (ITU T.81 §B.2.2 SOFn) from their first octets, and PNG text chunks (§11.3.4
tEXt, zTXt, iTXt: their presence and size, never inflated). Pillow would decode far more
than this needs; these few fields are read with `struct` within the octets at hand.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

MAX_ENTRIES = 1000
MAX_DEPTH = 3
MAX_NESTED = 1 << 20
MAX_SEGMENTS = 256  # JPEG segments walked looking for the frame header
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(slots=True)
class ZipListing:
    names: list[str] = field(default_factory=list)  # every level's entry names
    encrypted: bool = False
    too_deep: bool = False  # a zip nested past MAX_DEPTH
    truncated: bool = False  # more entries than MAX_ENTRIES
    broken: bool = False  # not readable as a zip (after its signature said it was one)


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def list_zip(data: bytes, depth: int = 1, out: ZipListing | None = None) -> ZipListing:
    """The entries of the zip in `data` and of the zips in it, as the module docstring says."""
    out = out if out is not None else ZipListing()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if len(infos) + len(out.names) > MAX_ENTRIES:
                out.truncated = True
                infos = infos[: max(0, MAX_ENTRIES - len(out.names))]
            for info in infos:
                out.names.append(info.filename[:255])
                if info.flag_bits & 0x1:
                    out.encrypted = True
                    continue
                if not info.filename.lower().endswith(".zip"):
                    continue
                if depth >= MAX_DEPTH:
                    out.too_deep = True
                    continue
                if info.file_size <= MAX_NESTED:
                    with z.open(info) as f:
                        list_zip(f.read(MAX_NESTED), depth + 1, out)
    # what zipfile raises for a damaged or hostile archive; NotImplementedError for a
    # compression method it lacks, RuntimeError for an encrypted nested entry
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, struct.error):
        out.broken = True
    return out


@dataclass(frozen=True, slots=True)
class ImageInfo:
    kind: str  # "png", "gif", "jpeg"
    width: int
    height: int
    text_octets: int = 0  # PNG text chunks' data, in all


def image_info(data: bytes) -> ImageInfo | None:
    """The image's kind and dimensions (and PNG text), None when it is none of the three
    or its header is cut short."""
    try:
        if data.startswith(_PNG):
            return _png(data)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return ImageInfo("gif", width, height)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
    except struct.error:
        return None
    return None


def _png(data: bytes) -> ImageInfo | None:
    pos, width, height, text = len(_PNG), 0, 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR" and length >= 8:
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            text += length
        elif kind == b"IEND":
            break
        pos += 12 + length
    return ImageInfo("png", width, height, text) if width else None


def _jpeg(data: bytes) -> ImageInfo | None:
    pos = 2
    for _ in range(MAX_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                      0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ImageInfo("jpeg", width, height)
        if length < 2:
            return None
        pos += 2 + length
    return None
