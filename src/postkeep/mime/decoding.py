"""Incremental Content-Transfer-Encoding decoders (RFC 2045 §6.7 quoted-printable, §6.8 base64).

BINARY[section] (RFC 3516 §4.2) of a part too large to hold is decoded piece by piece as it is
read from the store. Fed the encoded body in pieces of any size, these decoders write what
`postkeep.mime.structure.decoded_body` gives for the whole body at once, and hold only a few
octets between pieces (at most `MAX_CARRY` for pathological quoted-printable).

Base64 follows `binascii.a2b_base64` (non-strict): octets outside the alphabet are skipped; a
run of "=" that completes a quad ends the data. Python 3.11 ignores what follows such a run,
3.13 goes on decoding it: data after the padding is refused here (ValueError, the server's NO
[UNKNOWN-CTE], RFC 3516 §4.3) rather than guessed at. Quoted-printable is cut only where no
token of `decode_quoted_printable` can span the cut (after an octet that is none of "=", blank
and CR, with no "=" just before it), and each piece is decoded alone: line ends are normalised
per piece, which is the same as for the whole since no CR LF pair is cut.
"""

from __future__ import annotations

import binascii
import re
from typing import Final

from postkeep.mime.structure import decode_quoted_printable

MAX_CARRY: Final = 1 << 20  # quoted-printable octets held waiting for a safe cut

_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64: Final = bytes(sorted(set(range(256)) - set(_ALPHABET) - {ord("=")}))
_PAD_RUNS: Final = re.compile(rb"=+")
_UNSAFE_END: Final = frozenset(b"= \t\r")


class Base64Decoder:
    """base64 (RFC 2045 §6.8) incrementally, as `binascii.a2b_base64` decodes it whole."""

    __slots__ = ("_closed", "_pads", "_pending")

    def __init__(self) -> None:
        self._pending = b""  # alphabet octets of the quad under way (fewer than 4)
        self._pads = 0  # "=" in a row since the last alphabet octet, while a quad is half full
        self._closed = False  # a padding completed a quad: only padding may follow

    def feed(self, data: bytes) -> bytes:
        """The octets decoded from `data` (and what earlier pieces left pending)."""
        clean = data.translate(None, _NOT_BASE64)
        out: list[bytes] = []
        pos = 0
        for run in _PAD_RUNS.finditer(clean):
            self._alphabet(clean[pos : run.start()], out)
            quad = len(self._pending)
            if not self._closed and quad >= 2:
                self._pads += run.end() - run.start()
                if quad + self._pads >= 4:  # the padding completes the quad: the data ends
                    out.append(binascii.a2b_base64(self._pending + b"=" * (4 - quad)))
                    self._pending = b""
                    self._closed = True
            pos = run.end()
        self._alphabet(clean[pos:], out)
        return b"".join(out)

    def _alphabet(self, octets: bytes, out: list[bytes]) -> None:
        if not octets:
            return
        if self._closed:
            raise ValueError("undecodable base64: data after the padding")
        self._pads = 0
        data = self._pending + octets
        whole = len(data) - len(data) % 4
        if whole:
            out.append(binascii.a2b_base64(data[:whole]))
        self._pending = data[whole:]

    def finish(self) -> bytes:
        """The end of the body: ValueError where `binascii.a2b_base64` raises."""
        if self._pending:
            raise ValueError("undecodable base64: incomplete final quad")
        return b""


class QuotedPrintableDecoder:
    """quoted-printable (RFC 2045 §6.7) incrementally, as `decode_quoted_printable` whole."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        cut = len(data)
        while cut and (data[cut - 1] in _UNSAFE_END or data[cut - 2 : cut - 1] == b"="):
            cut -= 1
        if len(data) - cut > MAX_CARRY:
            raise ValueError("undecodable quoted-printable: no place to cut a long run")
        self._carry = data[cut:]
        return decode_quoted_printable(data[:cut]) if cut else b""

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return decode_quoted_printable(carry) if carry else b""


class _Identity:
    """7BIT, 8BIT and BINARY: the octets as they are."""

    __slots__ = ()

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


Decoder = Base64Decoder | QuotedPrintableDecoder | _Identity


def decoder(encoding: str) -> Decoder:
    """A fresh decoder for a part's Content-Transfer-Encoding (upper case, as `Part.encoding`);
    ValueError for one BINARY cannot remove (RFC 3516 §4.3)."""
    if encoding == "BASE64":
        return Base64Decoder()
    if encoding == "QUOTED-PRINTABLE":
        return QuotedPrintableDecoder()
    if encoding in ("7BIT", "8BIT", "BINARY"):
        return _Identity()
    raise ValueError(f"unknown Content-Transfer-Encoding {encoding}")
