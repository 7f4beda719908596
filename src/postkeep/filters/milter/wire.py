"""The milter protocol's wire form, version 6, sans-IO: packets, commands, replies.

The milter protocol is the one Sendmail's libmilter speaks (sendmail's
``include/libmilter/mfdef.h`` and ``libmilter/docs``; Postfix's ``MILTER_README`` and
``src/milter/milter8.c`` are the other MTA-side implementation). Every packet, both ways, is
a 4-octet unsigned big-endian length, then that many octets: a one-octet command (or reply)
code and its data. Strings are NUL-terminated; integers are 4-octet big-endian.

The MTA (we) sends commands: ``O`` option negotiation (version, actions, protocol flags),
``D`` macros for the next command, ``C`` connect (host name, family, port, address), ``H``
HELO, ``M`` MAIL FROM (the path and its ESMTP arguments), ``R`` RCPT TO, ``T`` DATA, ``L``
one header field (name, value), ``N`` end of headers, ``B`` a body chunk (at most 65535
octets), ``E`` end of body, ``A`` abort, ``Q`` quit. The milter answers ``O`` once, then
each command (unless it asked for no reply to it) with ``c`` continue, ``a`` accept,
``r`` reject, ``t`` tempfail, ``d`` discard, ``y`` an SMTP reply of its own, ``s`` skip
(the rest of the body), or ``p`` progress (keep waiting). After ``E`` only, before its final
answer, it may send modifications: ``h`` add a header field, ``i`` insert one at an index,
``m`` change (or with an empty value delete) the n-th field of a name, ``b`` a chunk of the
replacement body, ``+`` / ``2`` add a recipient (``2``: with ESMTP arguments), ``-`` delete
one, ``q`` quarantine (with a reason). ``e`` (change the sender), ``4`` (shutdown) and
``f`` (connection failure) are read too: the caller refuses what it did not offer.

`encode_*` build packets, `PacketReader` cuts received octets into packets (each bounded by
`MAX_PACKET`), `decode_reply` reads one into a typed reply, `negotiate` checks the milter's
``O`` against what was offered. Nothing here touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

VERSION = 6
MAX_CHUNK = 65535  # a body chunk's octets at most (libmilter's MILTER_CHUNK_SIZE)
MAX_PACKET = 128 * 1024  # a received packet's length at most (code and data)
MAX_MACRO_LISTS = 8

# commands (MTA to milter)
C_ABORT, C_BODY, C_CONNECT, C_MACRO, C_BODYEOB = b"A", b"B", b"C", b"D", b"E"
C_HELO, C_HEADER, C_MAIL, C_EOH, C_OPTNEG = b"H", b"L", b"M", b"N", b"O"
C_QUIT, C_RCPT, C_DATA = b"Q", b"R", b"T"

# replies (milter to MTA)
R_ADDRCPT, R_DELRCPT, R_ADDRCPT_PAR, R_SHUTDOWN = b"+", b"-", b"2", b"4"
R_ACCEPT, R_REPLBODY, R_CONTINUE, R_DISCARD = b"a", b"b", b"c", b"d"
R_CHGFROM, R_CONN_FAIL, R_ADDHEADER, R_INSHEADER = b"e", b"f", b"h", b"i"
R_CHGHEADER, R_OPTNEG, R_PROGRESS, R_QUARANTINE = b"m", b"O", b"p", b"q"
R_REJECT, R_SKIP, R_TEMPFAIL, R_REPLYCODE = b"r", b"s", b"t", b"y"

# actions (SMFIF_*): what the milter may do, offered by the MTA, asked for by the milter
A_ADDHDRS, A_CHGBODY, A_ADDRCPT, A_DELRCPT = 0x01, 0x02, 0x04, 0x08
A_CHGHDRS, A_QUARANTINE, A_CHGFROM, A_ADDRCPT_PAR = 0x10, 0x20, 0x40, 0x80
A_SETSYMLIST = 0x100

# protocol flags (SMFIP_*): steps the milter does not want, replies it will not send
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT = 0x01, 0x02, 0x04, 0x08
P_NOBODY, P_NOHDRS, P_NOEOH, P_NR_HDR = 0x10, 0x20, 0x40, 0x80
P_NOUNKNOWN, P_NODATA, P_SKIP, P_RCPT_REJ = 0x100, 0x200, 0x400, 0x800
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
P_NR_DATA, P_NR_UNKN, P_NR_EOH, P_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
P_HDR_LEADSPC = 0x100000

# macro stages (SMFIM_*), in the order of SETSYMLIST's lists
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = range(7)
STAGE_COMMANDS = {M_CONNECT: C_CONNECT, M_HELO: C_HELO, M_ENVFROM: C_MAIL,
                  M_ENVRCPT: C_RCPT, M_DATA: C_DATA, M_EOM: C_BODYEOB, M_EOH: C_EOH}

#: What we offer: every change we apply (not the sender's), macro lists.
OFFERED_ACTIONS = (A_ADDHDRS | A_CHGBODY | A_ADDRCPT | A_DELRCPT | A_CHGHDRS | A_QUARANTINE
                   | A_ADDRCPT_PAR | A_SETSYMLIST)
#: Every step may be left out and every reply waived; SKIP understood; leading spaces kept
#: on request. Not offered: UNKNOWN commands (we send none), rejected recipients (none).
OFFERED_PROTOCOL = (P_NOCONNECT | P_NOHELO | P_NOMAIL | P_NORCPT | P_NOBODY | P_NOHDRS
                    | P_NOEOH | P_NR_HDR | P_NOUNKNOWN | P_NODATA | P_SKIP | P_NR_CONN
                    | P_NR_HELO | P_NR_MAIL | P_NR_RCPT | P_NR_DATA | P_NR_UNKN | P_NR_EOH
                    | P_NR_BODY | P_HDR_LEADSPC)


class ProtocolError(Exception):
    """The milter sent what the protocol does not allow, or more than the bounds."""


# -- encoding -----------------------------------------------------------------------------------


def packet(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", 1 + len(data)) + code + data


def cstr(value: bytes) -> bytes:
    """A NUL-terminated string; ValueError if it holds a NUL (it would end early)."""
    if b"\0" in value:
        raise ValueError("a milter string cannot hold a NUL")
    return value + b"\0"


def encode_optneg(actions: int = OFFERED_ACTIONS, protocol: int = OFFERED_PROTOCOL,
                  version: int = VERSION) -> bytes:
    return packet(C_OPTNEG, struct.pack(">III", version, actions, protocol))


def encode_macros(command: bytes, macros: Mapping[str, str]) -> bytes:
    data = b"".join(cstr(k.encode("utf-8")) + cstr(v.encode("utf-8", "surrogateescape"))
                    for k, v in macros.items())
    return packet(C_MACRO, command + data)


def encode_connect(hostname: str, address: str, port: int = 0) -> bytes:
    """``C``: the client's name and address; family ``4``/``6`` from the address's form,
    ``U`` (unknown, no port or address) when there is none."""
    name = cstr(hostname.encode("utf-8", "surrogateescape"))
    if not address:
        return packet(C_CONNECT, name + b"U")
    family = b"6" if ":" in address else b"4"
    return packet(C_CONNECT, name + family + struct.pack(">H", port) + cstr(address.encode()))


def encode_helo(name: str) -> bytes:
    return packet(C_HELO, cstr(name.encode("utf-8", "surrogateescape")))


def _path_args(path: str, args: Sequence[str]) -> bytes:
    return b"".join(cstr(s.encode("utf-8", "surrogateescape")) for s in (f"<{path}>", *args))


def encode_mail(path: str, args: Sequence[str] = ()) -> bytes:
    return packet(C_MAIL, _path_args(path, args))


def encode_rcpt(path: str, args: Sequence[str] = ()) -> bytes:
    return packet(C_RCPT, _path_args(path, args))


def encode_header(name: bytes, value: bytes) -> bytes:
    return packet(C_HEADER, cstr(name) + cstr(value))


def encode_body(chunk: bytes) -> bytes:
    if not 0 < len(chunk) <= MAX_CHUNK:
        raise ValueError(f"a body chunk holds 1 to {MAX_CHUNK} octets")
    return packet(C_BODY, chunk)


DATA = packet(C_DATA)
EOH = packet(C_EOH)
BODYEOB = packet(C_BODYEOB)
ABORT = packet(C_ABORT)
QUIT = packet(C_QUIT)


# -- decoding -----------------------------------------------------------------------------------


class PacketReader:
    """Cuts received octets into packets ``(code, data)``, each of at most `limit` octets
    (its length field is read first: a longer one is refused before it is buffered)."""

    def __init__(self, limit: int = MAX_PACKET) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        packets = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack_from(">I", self._buf)
            if not 0 < length <= self.limit:
                raise ProtocolError(f"packet length {length} (allowed: 1 to {self.limit})")
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            packets.append((body[:1], body[1:]))
        return packets

    @property
    def pending(self) -> int:
        """Octets received that are no whole packet yet."""
        return len(self._buf)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The milter's ``O``: what it asked for, within what was offered. `macros` lists, by
    stage (`M_*`), the macro names it wants there (SETSYMLIST), if it gave a list."""

    version: int
    actions: int
    protocol: int
    macros: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def wants(self, flag: int) -> bool:
        return bool(self.protocol & flag)


def negotiate(code: bytes, data: bytes, actions: int = OFFERED_ACTIONS,
              protocol: int = OFFERED_PROTOCOL) -> Negotiated:
    """The milter's answer to our ``O``, its actions and flags kept to those offered (as
    Postfix does: rspamd answers with every action it knows, offered or not)."""
    if code != R_OPTNEG:
        raise ProtocolError(f"expected the negotiation reply, got {code!r}")
    if len(data) < 12:
        raise ProtocolError("negotiation reply shorter than 12 octets")
    version, their_actions, their_protocol = struct.unpack_from(">III", data)
    if not 2 <= version <= VERSION:
        raise ProtocolError(f"milter protocol version {version} (spoken: 2 to {VERSION})")
    macros: dict[int, tuple[str, ...]] = {}
    rest = data[12:]
    while rest:  # SETSYMLIST: stage, names
        if len(rest) < 5 or len(macros) >= MAX_MACRO_LISTS:
            raise ProtocolError("malformed macro list in the negotiation reply")
        (stage,) = struct.unpack_from(">I", rest)
        names, sep, rest = rest[4:].partition(b"\0")
        if not sep or stage not in STAGE_COMMANDS or stage in macros:
            raise ProtocolError("malformed macro list in the negotiation reply")
        macros[stage] = tuple(_text(names).split())
    return Negotiated(version, their_actions & actions, their_protocol & protocol,
                      macros if their_actions & actions & A_SETSYMLIST else {})


# replies, typed


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    pass


@dataclass(frozen=True, slots=True)
class Tempfail:
    pass


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class ReplyCode:
    """``y``: the SMTP reply the milter wants sent, as it wrote it (``550 5.7.1 text``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Skip:
    pass


@dataclass(frozen=True, slots=True)
class Progress:
    pass


@dataclass(frozen=True, slots=True)
class Failure:
    """``f`` (connection failure) or ``4`` (shutdown): the milter gives no verdict."""

    code: bytes


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """The `index`-th field named `name` (1 first) gets `value`; an empty one deletes it."""

    index: int
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class AddRecipient:
    address: str
    args: str = ""


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    address: str


@dataclass(frozen=True, slots=True)
class ChangeSender:
    address: str
    args: str = ""


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str


Final = Accept | Reject | Tempfail | Discard | ReplyCode | Failure
Modification = (AddHeader | InsertHeader | ChangeHeader | ReplaceBody | AddRecipient
                | DeleteRecipient | ChangeSender | Quarantine)
Reply = Final | Continue | Skip | Progress | Modification

#: The action a modification needs negotiated.
NEEDS = {AddHeader: A_ADDHDRS, InsertHeader: A_ADDHDRS, ChangeHeader: A_CHGHDRS,
         ReplaceBody: A_CHGBODY, AddRecipient: A_ADDRCPT, DeleteRecipient: A_DELRCPT,
         ChangeSender: A_CHGFROM, Quarantine: A_QUARANTINE}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _strings(data: bytes, count: int, optional: int = 0) -> list[bytes]:
    """`count` NUL-terminated strings (and up to `optional` more) filling `data` exactly."""
    if not data.endswith(b"\0"):
        raise ProtocolError("string not NUL-terminated")
    parts = data[:-1].split(b"\0")
    if not count <= len(parts) <= count + optional:
        raise ProtocolError(f"expected {count} strings, got {len(parts)}")
    return parts


def _address(raw: bytes) -> str:
    text = _text(raw).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text or len(text) > 998:
        raise ProtocolError("empty or oversized recipient address")
    return text


def decode_reply(code: bytes, data: bytes) -> Reply:
    """One packet from the milter, read; ProtocolError when it is none of the replies or
    its data does not fit its code."""
    simple: dict[bytes, Reply] = {R_CONTINUE: Continue(), R_ACCEPT: Accept(),
                                  R_REJECT: Reject(), R_TEMPFAIL: Tempfail(),
                                  R_DISCARD: Discard(), R_SKIP: Skip(),
                                  R_PROGRESS: Progress(), R_CONN_FAIL: Failure(code),
                                  R_SHUTDOWN: Failure(code)}
    if code in simple:
        return simple[code]
    if code == R_REPLYCODE:
        (text,) = _strings(data, 1)
        return ReplyCode(_text(text))
    if code == R_ADDHEADER:
        name, value = _strings(data, 2)
        return AddHeader(name, value)
    if code in (R_INSHEADER, R_CHGHEADER):
        if len(data) < 4:
            raise ProtocolError("header index missing")
        (index,) = struct.unpack_from(">I", data)
        name, value = _strings(data[4:], 2)
        return (InsertHeader if code == R_INSHEADER else ChangeHeader)(index, name, value)
    if code == R_REPLBODY:
        return ReplaceBody(data)
    if code in (R_ADDRCPT, R_ADDRCPT_PAR, R_CHGFROM):
        parts = _strings(data, 1, optional=1 if code != R_ADDRCPT else 0)
        args = _text(parts[1]) if len(parts) > 1 else ""
        if code == R_CHGFROM:
            return ChangeSender(_address(parts[0]) if parts[0].strip(b"<> ") else "", args)
        return AddRecipient(_address(parts[0]), args)
    if code == R_DELRCPT:
        (address,) = _strings(data, 1)
        return DeleteRecipient(_address(address))
    if code == R_QUARANTINE:
        (reason,) = _strings(data, 1)
        return Quarantine(_text(reason))
    raise ProtocolError(f"unknown reply code {code!r}")
