"""Content filters without a scanner: clamd's sans-IO framing and replies, the runner's
combination of results (order, first reject or tempfail wins over a quarantine, scores,
symbols, timeouts and fail modes), the header fields and the removal of forged ones, and the
config's checks."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postkeep import config as config_mod
from postkeep.config.filters import FILTER_NAMES
from postkeep.errors import ConfigError
from postkeep.filters import headers
from postkeep.filters.base import (
    Action,
    Direction,
    FilterResult,
    FilterRunner,
    ScanContext,
    ScanError,
    ScanOutcome,
)
from postkeep.filters.clamd_protocol import (
    END,
    MAX_REPLY,
    ProtocolError,
    ReplyReader,
    StreamFramer,
    Verdict,
    chunk,
    parse_pong,
    parse_reply,
)
from postkeep.filters.setup import FILTERS, runner
from postkeep.policy.content import content_verdict
from postkeep.store.api import Envelope
from postkeep.store.spool import MessageData


def unframe(frames: bytes) -> list[bytes]:
    """The chunks of an INSTREAM body, the end chunk included (as b"")."""
    out, pos = [], 0
    while pos < len(frames):
        (size,) = struct.unpack(">I", frames[pos : pos + 4])
        out.append(frames[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


# -- framing ------------------------------------------------------------------------------------


def test_chunks_are_length_prefixed_big_endian() -> None:
    assert chunk(b"abc") == b"\0\0\0\x03abc"
    assert END == b"\0\0\0\0"
    with pytest.raises(ValueError):
        chunk(b"")


def test_framer_cuts_into_chunks_and_stops_at_the_limit() -> None:
    framer = StreamFramer(limit=10, chunk_size=4)
    body = b"".join(framer.frames(b"abcdef")) + b"".join(framer.frames(b"ghijklmn"))
    assert unframe(body) == [b"abcd", b"ef", b"ghij"]
    assert framer.sent == 10 and framer.truncated and framer.full
    assert list(framer.frames(b"more")) == []


def test_framer_under_the_limit_is_not_truncated() -> None:
    framer = StreamFramer(limit=100, chunk_size=64)
    assert unframe(b"".join(framer.frames(b"x" * 100))) == [b"x" * 64, b"x" * 36]
    assert framer.full and not framer.truncated


def test_reply_reader_waits_for_the_nul_and_is_bounded() -> None:
    reader = ReplyReader()
    assert reader.feed(b"stream: O") is None
    assert reader.feed(b"K\0") == b"stream: OK"
    with pytest.raises(ProtocolError):
        ReplyReader(limit=8).feed(b"x" * 9)
    with pytest.raises(ProtocolError):
        ReplyReader(limit=8).feed(b"x" * 9 + b"\0")
    closed = ReplyReader()
    closed.feed(b"INSTREAM size limit exceeded. ERROR\n")
    assert closed.eof() == b"INSTREAM size limit exceeded. ERROR"
    with pytest.raises(ProtocolError):
        ReplyReader().eof()


@pytest.mark.parametrize(("reply", "verdict", "detail"), [
    (b"stream: OK", Verdict.CLEAN, ""),
    (b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND", Verdict.FOUND,
     "Eicar-Test-Signature.UNOFFICIAL"),
    (b"INSTREAM size limit exceeded. ERROR", Verdict.ERROR, "INSTREAM size limit exceeded."),
    (b"stream: Can't allocate memory ERROR", Verdict.ERROR, "stream: Can't allocate memory"),
])
def test_replies(reply: bytes, verdict: Verdict, detail: str) -> None:
    parsed = parse_reply(reply)
    assert (parsed.verdict, parsed.detail) == (verdict, detail)
    assert parsed.size_limit == (b"size limit" in reply)


@pytest.mark.parametrize("reply", [
    b"", b"OK", b"stream: ", b"stream: FOUND", b"stream: two words FOUND", b"file: OK",
    b"stream: OK\x01", "stream: Vírus FOUND".encode(), b"stream: " + b"A" * 300 + b" FOUND",
    b"x" * (MAX_REPLY + 1),
])
def test_replies_that_are_none_of_the_forms(reply: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(reply)


def test_pong() -> None:
    parse_pong(b"PONG")
    with pytest.raises(ProtocolError):
        parse_pong(b"PANG")


# -- the runner ---------------------------------------------------------------------------------


@dataclass
class Fake:
    """A filter that returns `result`, raises `error`, or sleeps `delay` first."""

    name: str
    result: FilterResult = field(default_factory=FilterResult)
    error: Exception | None = None
    delay: float = 0.0
    open_inbound: bool = False
    header: str = ""
    timeout: float = 1.0
    seen: list[ScanContext] = field(default_factory=list)

    def fails_open(self, direction: Direction) -> bool:
        return self.open_inbound if direction is Direction.INBOUND else True

    async def scan(self, message: MessageData, context: ScanContext) -> FilterResult:
        self.seen.append(context)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.result


def context(direction: Direction = Direction.INBOUND) -> ScanContext:
    envelope = Envelope(queue_id="Q1", mail_from="a@remote.test", recipients=[],
                        client_ip="192.0.2.1", helo="h", received_at=0.0)
    return ScanContext(direction, "Q1", "192.0.2.1", envelope, "spf=pass")


def run(*filters: Fake, direction: Direction = Direction.INBOUND) -> ScanOutcome:
    return asyncio.run(FilterRunner(filters, direction).run(b"text", context(direction)))


def test_scores_add_up_symbols_are_listed_and_a_tag_tags() -> None:
    a = Fake("a", FilterResult(score=1.5, symbols=("A",), status="ok", action=Action.TAG),
             header="X-A")
    b = Fake("b", FilterResult(score=2.0, symbols=("B1", "B2")))
    outcome = run(a, b)
    assert (outcome.action, outcome.score, outcome.symbols) == (Action.TAG, 3.5, ("A", "B1", "B2"))
    assert outcome.summary() == "a=ok score=3.5 symbols=A,B1,B2"
    assert a.seen[0].auth_results == "spf=pass" and b.seen


@pytest.mark.parametrize("action", [Action.REJECT, Action.TEMPFAIL])
def test_the_first_reject_or_tempfail_wins_and_ends_the_run(action: Action) -> None:
    first = Fake("first", FilterResult(action, score=1.0, reason="bad", status="infected"))
    second = Fake("second", FilterResult(Action.REJECT, reason="also bad"))
    outcome = run(Fake("zero", FilterResult(score=0.5)), first, second)
    assert (outcome.action, outcome.decided_by, outcome.reason) == (action, "first", "bad")
    assert outcome.score == 1.5 and not second.seen
    verdict = content_verdict(outcome, "Q1", submission=False)
    assert verdict is not None
    expected = (554, "5.7.1") if action is Action.REJECT else (451, "4.7.1")
    assert (verdict.reply.code, verdict.reply.enhanced) == expected
    assert verdict.reason == "first: bad qid=Q1"
    if action is Action.REJECT:
        assert "infected" not in verdict.reply.text and "bad" not in verdict.reply.text
        sub = content_verdict(outcome, "Q1", submission=True)
        assert sub is not None and "first" in sub.reply.text


def test_a_quarantine_holds_but_a_later_reject_or_tempfail_still_decides() -> None:
    """Precedence: reject = tempfail (the first) > quarantine (the first) > tag > accept."""
    held = Fake("held", FilterResult(Action.QUARANTINE, score=1.0, reason="virus found: X"))
    again = Fake("again", FilterResult(Action.QUARANTINE, reason="other"))
    tag = Fake("tag", FilterResult(Action.TAG, score=2.0))
    outcome = run(tag, held, again)
    assert (outcome.action, outcome.decided_by, outcome.reason) == (
        Action.QUARANTINE, "held", "virus found: X")
    assert outcome.score == 3.0 and again.seen  # the run went on past the quarantine
    for action in (Action.REJECT, Action.TEMPFAIL):
        late = Fake("late", FilterResult(action, reason="bad"))
        decided = run(Fake("held", FilterResult(Action.QUARANTINE, reason="r")), late)
        assert (decided.action, decided.decided_by) == (action, "late")
    assert content_verdict(outcome, "Q1", submission=False) is None  # accepted, held


def test_accepted_outcomes_have_no_verdict() -> None:
    assert content_verdict(run(Fake("a")), "Q1", submission=False) is None
    assert content_verdict(run(Fake("a", FilterResult(Action.TAG))), "Q1",
                           submission=True) is None


@pytest.mark.parametrize("error", [ScanError("refused"), ConnectionRefusedError(111, "no"),
                                   None])
def test_fail_modes(error: Exception | None, caplog: pytest.LogCaptureFixture) -> None:
    """A failing or slow filter (the delay past its timeout) gets its fail mode: closed on the
    MX (a tempfail naming it), open on submission (goes on, said unscanned), logged."""
    def make() -> Fake:
        return Fake("av", error=error, delay=5.0 if error is None else 0.0, timeout=0.1,
                    header="X-Virus-Scanned")
    closed = run(make())
    assert closed.action is Action.TEMPFAIL and closed.decided_by == "av"
    assert "unavailable" in closed.reason
    opened = run(make(), Fake("next", FilterResult(status="clean")),
                 direction=Direction.OUTBOUND)
    assert opened.action is Action.ACCEPT
    assert opened.summary() == "av=unscanned (scanner unavailable) next=clean"
    lines = [r.getMessage() for r in caplog.records if r.name == "postkeep.filters"]
    assert len(lines) == 2 and "mode=closed" in lines[0] and "mode=open" in lines[1]
    assert ("no answer within 0.1s" if error is None else "reason=") in lines[0]


# -- header fields ------------------------------------------------------------------------------


def test_fields_rendered() -> None:
    clean = run(Fake("clamav", FilterResult(status="clean"), header="X-Virus-Scanned"))
    assert headers.render(clean, "mx.example") == (
        b"X-Virus-Scanned: clamav at mx.example; clean\r\n")
    tagged = run(Fake("spam", FilterResult(Action.TAG, score=6.25, symbols=("A", "B"))))
    assert headers.render(tagged, "mx.example") == (
        b"X-Spam-Status: Yes, score=6.2 tests=A,B at mx.example\r\n"
        b"X-Spam-Score: 6.2 at mx.example\r\n")


def test_forged_fields_naming_this_host_are_removed() -> None:
    block = (b"X-Virus-Scanned: clamav at MX.Example.; clean\r\n"
             b"Subject: hi\r\n"
             b"X-Spam-Status: No, score=0.0 tests=none\r\n at\r\n mx.example\r\n"
             b"X-Virus-Scanned: amavisd-new at other.example\r\n"
             b"X-Virus-Scanned: clamav at mx.example.net; clean\r\n"
             b"X-Spam-Score: 9.9 at mx.example\r\n"
             b"X-Other: at mx.example\r\n")
    kept, removed = headers.strip_own(block, "mx.example")
    assert removed == 3
    assert kept == (b"Subject: hi\r\nX-Virus-Scanned: amavisd-new at other.example\r\n"
                    b"X-Virus-Scanned: clamav at mx.example.net; clean\r\n"
                    b"X-Other: at mx.example\r\n")
    assert headers.strip_own(kept, "mx.example") == (kept, 0)


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), [
    ('[filters]\ninbound = ["spam"]\n', "filters.inbound[0]"),
    ('[filters]\noutbound = ["antivirus", "antivirus"]\n', "filters.outbound[1]"),
    ('[antivirus]\naddress = "clamd:3310"\n', "antivirus.address"),
    ("[antivirus]\ntimeout = 0\n", "antivirus.timeout"),
    ("[antivirus]\nmax_size = 0\n", "antivirus.max_size"),
    ('[antivirus]\noversize = "quarantine"\n', "antivirus.oversize"),
    ('[antivirus]\nfail_open_inbound = "yes"\n', "antivirus.fail_open_inbound"),
    ('[antivirus]\ninfected_inbound = "tag"\n', "antivirus.infected_inbound"),
    ('[antivirus]\ninfected_outbound = "drop"\n', "antivirus.infected_outbound"),
    ("[filters]\noutbound_hit_pause = -1\n", "filters.outbound_hit_pause"),
    ("[quarantine]\ndays = 0\n", "quarantine.days"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(path)
    assert e.value.path == key


def test_config_defaults_are_off(tmp_path: Path) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text('[filters]\ninbound = ["antivirus"]\n'
                    '[antivirus]\naddress = "127.0.0.1:3310"\n')
    cfg = config_mod.load(path)
    assert cfg.filters.outbound == [] and cfg.antivirus.oversize == "truncate"
    assert config_mod.Config().filters.inbound == []


def test_every_configurable_filter_can_be_made() -> None:
    assert set(FILTERS) == set(FILTER_NAMES)
    cfg = config_mod.Config()
    store: Any = object()  # made, not used: clamav needs none, junk keeps it for its scans
    assert runner(cfg, Direction.INBOUND, store) is None
    on = dataclasses.replace(cfg, filters=config_mod.FiltersConfig(
        outbound=["antivirus", "junk"]))
    made = runner(on, Direction.OUTBOUND, store)
    assert made is not None and [f.name for f in made.filters] == ["clamav", "junk"]
    assert made.filters[0].fails_open(Direction.OUTBOUND)
    assert not made.filters[0].fails_open(Direction.INBOUND)
