"""The channel between the main process and each worker process (`postkeep.server.workers`):
its messages and their frames, sans-IO.

A frame is a 4-byte big-endian length and that many octets of a JSON object; its ``t`` names
the message's kind and its other fields have short names. `encode` turns a message into a
whole frame; `frame_length` reads the length in a frame's header and `decode` turns a frame's
body back into a message. Decoding is strict: an unknown kind, a missing, unexpected or
wrongly typed field, malformed JSON or an oversized frame raises `ChannelError`, so whatever
the other process sends, the reader gets a well-typed message or that one error, never a
KeyError or a TypeError from deep inside a handler.

The messages (their kind on the wire, who sends them):

- `Hello` (``hello``), main process: the first message on a channel, with the HMAC key of the
  main process's password cache (`postkeep.auth.passwords.PasswordVerifier`);
- `Ready` (``ready``), worker: its listeners are up; with its pid;
- `SlotRequest` (``ip``, ``acct``, ``slow``), worker: take a connection slot, `IpSlot` before
  serving a connection, `AccountSlot` before a login (IMAP) or an event stream (web),
  `SlowSlot` when a connection turns slow; answered with an `Answer`. All slots are counted
  per service (``mx``, ``submission``, ``imap``, ``web``: `SERVICES`), each with its own
  limits;
- `SlotRelease` (``ip-``, ``acct-``, ``slow-``), worker: give back a slot it took; no answer;
- `PasswordQuery` (``pw?``), worker: is this verified password's HMAC in the main process's
  cache? answered with an `Answer`;
- `PasswordLearned` (``pw+``), worker: the HMAC of a password it has just verified;
- `Answer` (``ok``), main process: the yes or no to the `SlotRequest` or `PasswordQuery` with
  the same request id (the two share one series of ids per channel);
- `RateUsage` (``ru``), worker: what the firewall let through since its last one (one every
  `postkeep.net.firewall.REPORT_EVERY` seconds at most), per bucket
  (`postkeep.net.firewall.Buckets`: service, kind, IP class, network) with its count; no
  answer;
- `RateBlocked` (``rb``), main process: buckets that all workers together emptied, with the
  seconds until they hold a token again: the firewall refuses what they count until then;
- `Strike` (``st``), worker: a strike against a client address (`postkeep.bans`: its kind,
  and for a failed login the user); with a request id other than 0, answered with an `Answer`
  (yes: the account is under attack);
- `BanChange` (``ban``), main process: a ban in force until `until`, or ended (`until` 0),
  sent to every worker, and the whole list of bans in force after `Hello`;
- `Events` (``ev``), both: mailbox events (`postkeep.store.api.MailboxEvent`), from a worker's
  store to the main process, and from the main process to the workers (another worker's
  events, and its own: SMTP delivery).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from postkeep.config.firewall import CLASSES, KINDS
from postkeep.store.api import MailboxEvent

_LENGTH = struct.Struct("!I")
HEADER_SIZE = _LENGTH.size
MAX_FRAME = 64 * 1024  # octets of a frame's body
# Events per frame: the longest event row (32-bit ids and UID, 63-bit MODSEQ, the longest kind)
# is under 80 octets, so 500 of them stay far below MAX_FRAME (tests/unit/test_workers.py).
EVENTS_PER_FRAME = 500
# Rate entries per frame: a service, a kind, a class, an IPv6 network (at most 43 octets), a
# count: under 100 octets each
RATES_PER_FRAME = 500


SERVICES = ("mx", "submission", "imap", "web")  # the roles whose connections are counted apart
STRIKE_KINDS = ("auth", "harvest", "errors", "preauth", "tls", "web")  # postkeep.bans.policy.KINDS


class ChannelError(ValueError):
    """A frame that is not a valid message."""


# -- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpSlot:
    """A connection slot of an IP class on one service's listeners
    (`postkeep.net.slots.LocalSlots.take_ip`)."""

    service: str
    ip_class: str


@dataclass(frozen=True, slots=True)
class AccountSlot:
    """A slot of an account on one service (`postkeep.net.slots.LocalSlots.take_account`):
    an IMAP login, a webmail event stream."""

    service: str
    account_id: int


@dataclass(frozen=True, slots=True)
class SlowSlot:
    """One of the slots of one service's slow connections
    (`postkeep.net.slots.LocalSlots.take_slow`)."""

    service: str


Slot = IpSlot | AccountSlot | SlowSlot


@dataclass(frozen=True, slots=True)
class Hello:
    password_key: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class SlotRequest:
    request_id: int
    slot: Slot


@dataclass(frozen=True, slots=True)
class SlotRelease:
    slot: Slot


@dataclass(frozen=True, slots=True)
class PasswordQuery:
    request_id: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class PasswordLearned:
    digest: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    request_id: int
    ok: bool


@dataclass(frozen=True, slots=True)
class Strike:
    request_id: int  # 0: no answer wanted
    ip: str
    kind: str
    user: str


@dataclass(frozen=True, slots=True)
class BanChange:
    key: str
    until: float


@dataclass(frozen=True, slots=True)
class Events:
    events: tuple[MailboxEvent, ...]


#: one bucket's entry: (service, kind, class index or -1, network, count or seconds)
RateEntry = tuple[str, str, int, str, int]
BlockEntry = tuple[str, str, int, str, float]


@dataclass(frozen=True, slots=True)
class RateUsage:
    entries: tuple[RateEntry, ...]


@dataclass(frozen=True, slots=True)
class RateBlocked:
    entries: tuple[BlockEntry, ...]


Message = (
    Hello | Ready | SlotRequest | SlotRelease | PasswordQuery | PasswordLearned | Answer | Events
    | RateUsage | RateBlocked | Strike | BanChange
)


# -- encoding ------------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The whole frame of `message`: its length, then its JSON object."""
    body = json.dumps(_fields(message), separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


def _fields(message: Message) -> dict[str, Any]:
    match message:
        case Hello(password_key):
            return {"t": "hello", "key": password_key.hex()}
        case Ready(pid):
            return {"t": "ready", "pid": pid}
        case SlotRequest(request_id, IpSlot(service, ip_class)):
            return {"t": "ip", "id": request_id, "s": service, "k": ip_class}
        case SlotRequest(request_id, AccountSlot(service, account_id)):
            return {"t": "acct", "id": request_id, "s": service, "k": account_id}
        case SlotRequest(request_id, SlowSlot(service)):
            return {"t": "slow", "id": request_id, "s": service}
        case SlotRelease(IpSlot(service, ip_class)):
            return {"t": "ip-", "s": service, "k": ip_class}
        case SlotRelease(AccountSlot(service, account_id)):
            return {"t": "acct-", "s": service, "k": account_id}
        case SlotRelease(SlowSlot(service)):
            return {"t": "slow-", "s": service}
        case PasswordQuery(request_id, digest):
            return {"t": "pw?", "id": request_id, "k": digest.hex()}
        case PasswordLearned(digest):
            return {"t": "pw+", "k": digest.hex()}
        case Answer(request_id, ok):
            return {"t": "ok", "id": request_id, "ok": ok}
        case Strike(request_id, ip, kind, user):
            return {"t": "st", "id": request_id, "ip": ip, "k": kind, "u": user}
        case BanChange(key, until):
            return {"t": "ban", "k": key, "until": until}
        case Events(events):
            rows = [[e.account_id, e.mailbox_id, e.kind, e.uid, e.modseq] for e in events]
            return {"t": "ev", "e": rows}
        case RateUsage(entries):
            return {"t": "ru", "e": [list(e) for e in entries]}
        case RateBlocked(entries):
            return {"t": "rb", "e": [list(e) for e in entries]}
    raise TypeError(f"not a channel message: {message!r}")


# -- decoding ------------------------------------------------------------------------------------


def frame_length(header: bytes) -> int:
    """The length of the body that follows a frame's `HEADER_SIZE` octets of header."""
    if len(header) != HEADER_SIZE:
        raise ChannelError(f"frame header of {len(header)} octets, not {HEADER_SIZE}")
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ChannelError(f"frame of {length} octets (at most {MAX_FRAME})")
    return length


def decode(body: bytes) -> Message:
    """The message in a frame's body (the octets after its header)."""
    if len(body) > MAX_FRAME:
        raise ChannelError(f"frame of {len(body)} octets (at most {MAX_FRAME})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # also invalid UTF-8, and integers too long
        raise ChannelError(f"frame is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ChannelError(f"frame is a JSON {type(data).__name__}, not an object")
    kind = data.get("t")
    if not isinstance(kind, str):
        raise ChannelError("frame without a message kind ('t')")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ChannelError(f"unknown message kind {kind!r}")
    fields = _Fields(kind, data)
    message = decoder(fields)
    fields.check_all_read()
    return message


class _Fields:
    """The fields of one message's JSON object, each read with its expected type."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        self.kind = kind
        self.data = data
        self.read = {"t"}

    def _get(self, name: str) -> Any:
        if name not in self.data:
            raise ChannelError(f"{self.kind!r} message without {name!r}")
        self.read.add(name)
        return self.data[name]

    def _wrong(self, name: str, expected: str) -> ChannelError:
        value = self.data[name]
        return ChannelError(
            f"{self.kind!r} message: {name!r} is {type(value).__name__} {value!r:.40}, "
            f"not {expected}"
        )

    def integer(self, name: str) -> int:
        value = self._get(name)
        if not _is_int(value):
            raise self._wrong(name, "an integer")
        return value

    def string(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._wrong(name, "a boolean")
        return value

    def service(self, name: str) -> str:
        value = self._get(name)
        if value not in SERVICES:
            raise self._wrong(name, f"one of {', '.join(SERVICES)}")
        return value

    def number(self, name: str) -> float:
        value = self._get(name)
        if not _is_int(value) and not isinstance(value, float):
            raise self._wrong(name, "a number")
        return float(value)

    def strike_kind(self, name: str) -> str:
        value = self._get(name)
        if value not in STRIKE_KINDS:
            raise self._wrong(name, f"one of {', '.join(STRIKE_KINDS)}")
        return value

    def octets(self, name: str) -> bytes:
        """A string of hex digits, as the octets it spells."""
        value = self._get(name)
        if not isinstance(value, str):
            raise self._wrong(name, "a hex string")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise self._wrong(name, "a hex string") from None

    def events(self, name: str) -> tuple[MailboxEvent, ...]:
        rows = self._get(name)
        if not isinstance(rows, list) or not all(_is_event_row(row) for row in rows):
            raise self._wrong(name, "a list of [account, mailbox, kind, uid, modseq]")
        return tuple(MailboxEvent(*row) for row in rows)

    def rates(self, name: str, count: type) -> tuple[Any, ...]:
        """Rate entries: [service, kind, class, network, n], n a `count` (int: octets or
        commands; float: seconds), not negative."""
        rows = self._get(name)
        if not isinstance(rows, list) or not all(_is_rate_row(row, count) for row in rows):
            raise self._wrong(name, "a list of [service, kind, class, network, n]")
        return tuple((r[0], r[1], r[2], r[3], count(r[4])) for r in rows)

    def check_all_read(self) -> None:
        unexpected = sorted(self.data.keys() - self.read)
        if unexpected:
            raise ChannelError(f"{self.kind!r} message with unexpected fields {unexpected}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _is_event_row(row: object) -> bool:
    if not isinstance(row, list) or len(row) != 5:
        return False
    account_id, mailbox_id, kind, uid, modseq = row
    return (
        _is_int(account_id)
        and _is_int(mailbox_id)
        and isinstance(kind, str)
        and (uid is None or _is_int(uid))
        and (modseq is None or _is_int(modseq))
    )


def _is_rate_row(row: object, count: type) -> bool:
    if not isinstance(row, list) or len(row) != 5:
        return False
    service, kind, index, network, n = row
    number = _is_int(n) or (count is float and isinstance(n, float))
    return (
        service in SERVICES
        and kind in KINDS
        and _is_int(index)
        and -1 <= index < len(CLASSES)
        and isinstance(network, str)
        and len(network) <= 64
        and number
        and n >= 0
    )


_DECODERS: dict[str, Callable[[_Fields], Message]] = {
    "hello": lambda f: Hello(f.octets("key")),
    "ready": lambda f: Ready(f.integer("pid")),
    "ip": lambda f: SlotRequest(f.integer("id"), IpSlot(f.service("s"), f.string("k"))),
    "acct": lambda f: SlotRequest(f.integer("id"),
                                  AccountSlot(f.service("s"), f.integer("k"))),
    "slow": lambda f: SlotRequest(f.integer("id"), SlowSlot(f.service("s"))),
    "ip-": lambda f: SlotRelease(IpSlot(f.service("s"), f.string("k"))),
    "acct-": lambda f: SlotRelease(AccountSlot(f.service("s"), f.integer("k"))),
    "slow-": lambda f: SlotRelease(SlowSlot(f.service("s"))),
    "pw?": lambda f: PasswordQuery(f.integer("id"), f.octets("k")),
    "pw+": lambda f: PasswordLearned(f.octets("k")),
    "ok": lambda f: Answer(f.integer("id"), f.boolean("ok")),
    "ev": lambda f: Events(f.events("e")),
    "ru": lambda f: RateUsage(f.rates("e", int)),
    "rb": lambda f: RateBlocked(f.rates("e", float)),
    "st": lambda f: Strike(f.integer("id"), f.string("ip"), f.strike_kind("k"), f.string("u")),
    "ban": lambda f: BanChange(f.string("k"), f.number("until")),
}
