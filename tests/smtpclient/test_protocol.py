"""The client core (sans-IO): capabilities, the opening (greeting, EHLO/HELO, STARTTLS, AUTH),
and a transaction's commands, pipelined groups and per-recipient outcomes, with the pre-flight
refusals that send nothing (RFC 5321, 1870, 2920, 3030, 3461, 6152, 6531, 8689)."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from postkeep.smtp.client.framing import Reply, ReplyReader
from postkeep.smtp.client.protocol import (
    Capabilities,
    Credentials,
    Envelope,
    Handshake,
    HandshakeState,
    Recipient,
    Stage,
    Timeouts,
    Transaction,
    TransactionResult,
    TxState,
    parse_ehlo,
    plan,
    xtext,
)


def reply(raw: str) -> Reply:
    """A reply as the reader makes it from the peer's text ("250-a|250 b" for two lines)."""
    reader = ReplyReader()
    reader.enhanced_codes = True
    reader.feed("".join(line + "\r\n" for line in raw.split("|")).encode())
    out = reader.next_reply()
    assert out is not None
    return out


OK = reply("250 2.0.0 ok")
EHLO_ALL = reply("250-mx.test|250-PIPELINING|250-SIZE 1000|250-8BITMIME|250-SMTPUTF8|"
                 "250-CHUNKING|250-BINARYMIME|250-DSN|250-STARTTLS|250-AUTH PLAIN LOGIN|"
                 "250-REQUIRETLS|250-ENHANCEDSTATUSCODES|250-X-ODD thing|250 ")
FULL = parse_ehlo(EHLO_ALL)
PLAIN = Capabilities(esmtp=True, eightbitmime=True, enhancedstatuscodes=True)
PIPE = dataclasses.replace(PLAIN, pipelining=True)


def test_ehlo_capabilities() -> None:
    assert Capabilities(
        esmtp=True, size=1000, eightbitmime=True, smtputf8=True, pipelining=True, chunking=True,
        binarymime=True, dsn=True, starttls=True, requiretls=True, enhancedstatuscodes=True,
        auth=frozenset({"PLAIN", "LOGIN"}),
        keywords=("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN",
                  "STARTTLS", "AUTH", "REQUIRETLS", "ENHANCEDSTATUSCODES", "X-ODD")) == FULL


def test_ehlo_odd_forms() -> None:
    caps = parse_ehlo(reply("250-mx greets you|250-size|250-auth=login cram-md5|250-8bitmime|"
                            "250-!!|250 pipelining"))
    assert caps.size == 0 and caps.eightbitmime and caps.pipelining
    assert caps.auth == {"LOGIN", "CRAM-MD5"} and "!!" not in caps.keywords
    assert parse_ehlo(reply("250-mx|250 SIZE lots")).size is None
    assert parse_ehlo(reply("250 mx")) == Capabilities(esmtp=True)


# -- the opening -----------------------------------------------------------------------------------


def opened(hs: Handshake, *steps: tuple[str, bytes]) -> None:
    """Feed each reply and check what the handshake sends back."""
    for raw, expected in steps:
        assert hs.state is HandshakeState.REPLIES
        assert hs.on_reply(reply(raw)) == expected, raw


def test_ehlo_then_ready() -> None:
    hs = Handshake("out.example.net", starttls="never")
    opened(hs, ("220 mx ESMTP", b"EHLO out.example.net\r\n"), ("250-mx|250 8BITMIME", b""))
    assert hs.state is HandshakeState.READY and hs.capabilities.eightbitmime


def test_helo_after_a_5xx_to_ehlo() -> None:
    hs = Handshake("out.example.net")
    opened(hs, ("220 mx", b"EHLO out.example.net\r\n"),
           ("502 5.5.1 what", b"HELO out.example.net\r\n"), ("250 mx", b""))
    assert hs.state is HandshakeState.READY and hs.capabilities == Capabilities(esmtp=False)


@pytest.mark.parametrize(("steps", "stage"), [
    (["554 5.3.2 no service"], Stage.GREETING),
    (["421 4.3.2 busy"], Stage.GREETING),
    (["220 mx", "421 4.3.2 closing"], Stage.EHLO),
    (["220 mx", "500 no", "550 no"], Stage.HELO),
])
def test_opening_failures(steps: list[str], stage: Stage) -> None:
    hs = Handshake("out.test")
    for raw in steps:
        hs.on_reply(reply(raw))
    assert hs.state is HandshakeState.FAILED and hs.awaiting is stage
    assert hs.failure == reply(steps[-1])


def test_starttls_then_ehlo_again() -> None:
    hs = Handshake("out.test", starttls="required")
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 STARTTLS", b"STARTTLS\r\n"),
           ("220 go ahead", b""))
    assert hs.state is HandshakeState.START_TLS and hs.capabilities.starttls
    assert hs.tls_started() == b"EHLO out.test\r\n" and hs.capabilities == Capabilities()
    opened(hs, ("250-mx|250 SMTPUTF8", b""))
    assert hs.state is HandshakeState.READY and hs.tls and hs.capabilities.smtputf8


def test_starttls_required_and_not_offered_or_refused() -> None:
    hs = Handshake("out.test", starttls="required")
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250 mx", b""))
    assert hs.state is HandshakeState.FAILED and hs.failure is not None
    assert hs.failure.enhanced == "4.7.4" and hs.failure.generated and hs.awaiting is Stage.STARTTLS
    hs = Handshake("out.test", starttls="required")
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 STARTTLS", b"STARTTLS\r\n"),
           ("454 4.7.0 not now", b""))
    assert hs.state is HandshakeState.FAILED and hs.failure == reply("454 4.7.0 not now")


def test_starttls_opportunistic_refused_goes_on_in_clear() -> None:
    hs = Handshake("out.test")
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 STARTTLS", b"STARTTLS\r\n"),
           ("454 4.7.0 not now", b""))
    assert hs.state is HandshakeState.READY and not hs.tls


def test_auth_plain_over_tls() -> None:
    hs = Handshake("out.test", tls=True, credentials=Credentials("me@x", "s3cret"))
    expected = b"AUTH PLAIN " + base64.b64encode(b"\0me@x\0s3cret") + b"\r\n"
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 AUTH LOGIN PLAIN", expected),
           ("235 2.7.0 ok", b""))
    assert hs.state is HandshakeState.READY


def test_auth_login_steps_and_a_server_going_on_is_cancelled() -> None:
    hs = Handshake("out.test", tls=True, credentials=Credentials("me", "pw"))
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 AUTH LOGIN", b"AUTH LOGIN\r\n"),
           ("334 VXNlcm5hbWU6", b"bWU=\r\n"), ("334 UGFzc3dvcmQ6", b"cHc=\r\n"),
           ("334 more?", b"*\r\n"), ("501 5.7.0 cancelled", b""))
    assert hs.state is HandshakeState.FAILED and hs.awaiting is Stage.AUTH


def test_auth_refused_without_tls_and_nothing_sent() -> None:
    hs = Handshake("out.test", starttls="never", credentials=Credentials("me", "pw"))
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 AUTH PLAIN", b""))
    assert hs.state is HandshakeState.FAILED and hs.failure is not None
    assert hs.failure.status == "4.7.10" and hs.failure.transient


def test_helo_name_is_checked() -> None:
    with pytest.raises(ValueError):
        Handshake("out.test\r\nMAIL FROM:<x@y>")


# -- transactions ----------------------------------------------------------------------------------

ENV = Envelope("s@out.test", (Recipient("a@mx.test"), Recipient("b@mx.test"),
                              Recipient("c@mx.test")), size=10, body="8BITMIME")


def tx_of(envelope: Envelope, caps: Capabilities, **kw: bool) -> Transaction:
    planned = plan(envelope, caps, tls=kw.pop("tls", False), **kw)
    assert isinstance(planned, Transaction), planned
    return planned


def run(tx: Transaction, replies: list[str], body: list[bytes] | None = None) -> list[bytes]:
    """Drive `tx` as the session does: what it wrote, one entry per write."""
    written = [tx.start()]
    pending = [b"Subject: x\r\n\r\nhi\r\n"] if body is None else list(body)
    answers = iter(replies)
    while tx.state is not TxState.DONE:
        if tx.state is TxState.BODY:
            written.append(tx.body(pending.pop(0)) if pending else tx.end_body())
            continue
        out = tx.on_reply(reply(next(answers)))
        if out:
            written.append(out)
    assert next(answers, None) is None, "replies left over"
    return [w for w in written if w]


def finals(result: TransactionResult | None) -> list[str]:
    assert result is not None
    return [str(r.reply) for r in result.recipients]


def test_pipelined_group_and_mixed_recipients() -> None:
    tx = tx_of(ENV, PIPE)
    written = run(tx, ["250 2.1.0 ok", "250 2.1.5 ok", "450 4.2.0 greylisted",
                       "550 5.1.1 unknown", "354 go", "250 2.0.0 queued"])
    assert written == [
        b"MAIL FROM:<s@out.test> BODY=8BITMIME\r\nRCPT TO:<a@mx.test>\r\nRCPT TO:<b@mx.test>\r\n"
        b"RCPT TO:<c@mx.test>\r\nDATA\r\n",
        b"Subject: x\r\n\r\nhi\r\n", b".\r\n"]
    assert finals(tx.result) == ["250 2.0.0 queued", "450 4.2.0 greylisted", "550 5.1.1 unknown"]
    result = tx.result
    assert result is not None and result.stage is Stage.END and result.reusable and result.sent
    assert [r.recipient.address for r in result.delivered] == ["a@mx.test"]
    assert [r.code for r in result.temporary] == [450]
    assert [r.code for r in result.permanent] == [550]
    assert not tx.reset_needed


def test_one_command_at_a_time_without_pipelining() -> None:
    tx = tx_of(ENV, PLAIN)
    written = run(tx, ["250 ok", "550 5.1.1 a", "250 ok", "250 ok", "354 go", "451 4.3.0 later"])
    assert written[0] == b"MAIL FROM:<s@out.test> BODY=8BITMIME\r\n"
    assert written[1:5] == [b"RCPT TO:<a@mx.test>\r\n", b"RCPT TO:<b@mx.test>\r\n",
                            b"RCPT TO:<c@mx.test>\r\n", b"DATA\r\n"]
    assert finals(tx.result) == ["550 5.1.1 a", "451 4.3.0 later", "451 4.3.0 later"]


def test_no_recipient_accepted_no_data_without_pipelining() -> None:
    tx = tx_of(ENV, PLAIN)
    written = run(tx, ["250 ok", "550 5.1.1 a", "550 5.1.1 b", "450 4.1.1 c"])
    assert b"DATA\r\n" not in written and tx.result is not None
    assert tx.result.stage is Stage.RCPT and tx.reset_needed and tx.result.reusable


def test_pipelined_mail_refused_every_recipient_gets_its_reply() -> None:
    tx = tx_of(ENV, PIPE)
    run(tx, ["553 5.7.1 sender refused", "503 5.5.1 need MAIL", "503 5.5.1 need MAIL",
             "503 5.5.1 need MAIL", "503 5.5.1 need MAIL"])
    assert finals(tx.result) == ["553 5.7.1 sender refused"] * 3
    assert tx.result is not None and str(tx.result.reply) == "553 5.7.1 sender refused"


def test_pipelined_354_with_nobody_accepted_sends_the_dot_alone() -> None:
    tx = tx_of(ENV, PIPE)
    written = run(tx, ["250 ok", "550 5.1.1 a", "550 5.1.1 b", "550 5.1.1 c", "354 go",
                       "554 5.5.1 no valid recipients"])
    assert written[1:] == [b".\r\n"]
    assert finals(tx.result) == ["550 5.1.1 a", "550 5.1.1 b", "550 5.1.1 c"]


def test_421_in_the_middle_of_a_group() -> None:
    tx = tx_of(ENV, PIPE)
    run(tx, ["250 ok", "550 5.1.1 a", "421 4.3.2 shutting down"])
    assert finals(tx.result) == ["550 5.1.1 a", "421 4.3.2 shutting down",
                                 "421 4.3.2 shutting down"]
    assert tx.result is not None and not tx.result.reusable and tx.result.stage is Stage.RCPT


def test_connection_failure_leaves_the_undecided_temporary() -> None:
    tx = tx_of(ENV, PIPE)
    tx.start()
    for raw in ["250 ok", "250 ok", "250 ok", "550 5.1.1 c", "354 go"]:
        tx.on_reply(reply(raw))
    tx.body(b"text")
    tx.end_body()
    lost = Reply(451, "4.4.2", ("connection lost",), generated=True)
    tx.fail(lost)
    assert finals(tx.result) == [str(lost), str(lost), "550 5.1.1 c"]
    assert tx.result is not None and tx.result.stage is Stage.END and not tx.result.reusable


def test_rset_first_when_asked() -> None:
    tx = tx_of(ENV, PIPE, reset=True)
    assert tx.start().startswith(b"RSET\r\nMAIL FROM:")
    tx = tx_of(ENV, PLAIN, reset=True)
    written = run(tx, ["250 ok", "250 ok", "250 ok", "250 ok", "250 ok", "354 go", "250 ok"])
    assert written[:2] == [b"RSET\r\n", b"MAIL FROM:<s@out.test> BODY=8BITMIME\r\n"]
    tx = tx_of(ENV, PLAIN, reset=True)
    run(tx, ["500 what"])
    assert tx.result is not None and not tx.result.reusable and tx.result.stage is Stage.RSET


def test_parameters_dsn_only_to_a_dsn_peer() -> None:
    rcpt = Recipient("a@mx.test", "SUCCESS,FAILURE", "rfc822;A+b=c@x.test")
    env = Envelope("s@out.test", (rcpt,),
                   size=123, body="8bitmime", ret="hdrs", envid="id 1+=", requiretls=True)
    tx = tx_of(env, FULL, tls=True)
    assert tx.start() == (
        b"MAIL FROM:<s@out.test> SIZE=123 BODY=8BITMIME RET=HDRS ENVID=id+201+2B+3D REQUIRETLS\r\n"
        b"RCPT TO:<a@mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bb+3Dc@x.test\r\n")
    no_dsn = dataclasses.replace(FULL, dsn=False)
    tx = tx_of(env, no_dsn, tls=True)
    assert tx.start() == (b"MAIL FROM:<s@out.test> SIZE=123 BODY=8BITMIME REQUIRETLS\r\n"
                          b"RCPT TO:<a@mx.test>\r\n")
    assert xtext("jörg") == "j+C3+B6rg"


def test_smtputf8_sent_when_needed() -> None:
    env = Envelope("jörg@out.test", (Recipient("a@mx.test"),))
    assert b" SMTPUTF8" in tx_of(env, FULL).start()
    assert b"SMTPUTF8" not in tx_of(dataclasses.replace(env, mail_from="j@out.test"), FULL).start()


def test_bdat_chunks_last_marked_on_the_last() -> None:
    caps = dataclasses.replace(FULL, pipelining=False)
    env = dataclasses.replace(ENV, recipients=ENV.recipients[:1])
    tx = tx_of(env, caps)
    written = run(tx, ["250 ok", "250 ok", "250 2.0.0 chunk", "250 2.0.0 chunk", "250 2.0.0 done"],
                  [b"one\r\n", b"", b".two", b"three"])
    assert written == [b"MAIL FROM:<s@out.test> SIZE=10 BODY=8BITMIME\r\n",
                       b"RCPT TO:<a@mx.test>\r\n",
                       b"BDAT 5\r\none\r\n", b"BDAT 4\r\n.two", b"BDAT 5 LAST\r\nthree"]
    assert finals(tx.result) == ["250 2.0.0 done"] and not tx.reset_needed


def test_bdat_empty_message_and_a_refused_chunk() -> None:
    tx = tx_of(ENV, FULL)
    written = run(tx, ["250 ok", "250 ok", "250 ok", "250 ok", "250 2.0.0 done"], [])
    assert written[-1] == b"BDAT 0 LAST\r\n"
    tx = tx_of(ENV, FULL)
    written = run(tx, ["250 ok", "250 ok", "250 ok", "550 5.1.1 c", "552 5.3.4 too big"],
                  [b"a", b"b", b"c"])
    assert written[-1] == b"BDAT 1\r\na"  # nothing after the refused chunk
    assert finals(tx.result) == ["552 5.3.4 too big", "552 5.3.4 too big", "550 5.1.1 c"]
    assert tx.reset_needed and tx.result is not None and tx.result.stage is Stage.BDAT


# -- pre-flight refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "caps", "tls", "status"), [
    ({"size": 1001}, FULL, True, "5.3.4"),
    ({"body": "8BITMIME"}, dataclasses.replace(FULL, eightbitmime=False), True, "5.6.3"),
    ({"body": "BINARYMIME"}, dataclasses.replace(FULL, binarymime=False), True, "5.6.3"),
    ({"body": "BINARYMIME"}, dataclasses.replace(FULL, chunking=False), True, "5.6.3"),
    ({"smtputf8": True}, dataclasses.replace(FULL, smtputf8=False), True, "5.6.7"),
    ({"recipients": (Recipient("ü@mx.test"),)}, dataclasses.replace(FULL, smtputf8=False), True,
     "5.6.7"),
    ({"requiretls": True}, dataclasses.replace(FULL, requiretls=False), True, "5.7.30"),
    ({"requiretls": True}, FULL, False, "5.7.30"),
    ({"mail_from": "s@out.test>\r\nRSET"}, FULL, True, "5.1.7"),
])
def test_preflight_refusals_send_nothing(change: dict[str, object], caps: Capabilities,
                                         tls: bool, status: str) -> None:
    result = plan(dataclasses.replace(ENV, **change), caps, tls=tls)  # type: ignore[arg-type]
    assert isinstance(result, TransactionResult)
    assert not result.sent and result.reusable and result.stage is Stage.PREFLIGHT
    assert {r.reply.status for r in result.recipients} == {status} and result.reply.permanent
    assert result.reply.generated


def test_preflight_passes_within_bounds() -> None:
    assert isinstance(plan(dataclasses.replace(ENV, size=1000), FULL, tls=False), Transaction)
    no_limit = dataclasses.replace(FULL, size=0)
    assert isinstance(plan(dataclasses.replace(ENV, size=10**12), no_limit, tls=False),
                      Transaction)
    assert isinstance(plan(ENV, dataclasses.replace(FULL, size=None), tls=False), Transaction)


def test_unsafe_recipient_refused_the_others_sent() -> None:
    env = dataclasses.replace(ENV, recipients=(Recipient("a@mx.test>\r\nDATA"),
                                               Recipient("b@mx.test")))
    tx = tx_of(env, FULL)
    assert tx.start() == (b"MAIL FROM:<s@out.test> SIZE=10 BODY=8BITMIME\r\n"
                          b"RCPT TO:<b@mx.test>\r\n")
    only_bad = dataclasses.replace(env, recipients=env.recipients[:1])
    result = plan(only_bad, FULL, tls=False)
    assert isinstance(result, TransactionResult) and not result.sent
    assert result.recipients[0].reply.status == "5.1.3"


def test_envelope_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        Recipient("a@b", notify="SUCCESS,NEVER")
    with pytest.raises(ValueError):
        Recipient("a@b", orcpt="no-type")
    with pytest.raises(ValueError):
        Envelope("a@b", (Recipient("c@d"),), ret="ALL")
    with pytest.raises(ValueError):
        Envelope("a@b", ())


def test_rfc_5321_timeouts() -> None:
    t = Timeouts()
    assert [t.for_stage(s) for s in (Stage.GREETING, Stage.MAIL, Stage.RCPT, Stage.DATA,
                                     Stage.BODY, Stage.END)] == [300, 300, 300, 120, 180, 600]


def test_ignored_extensions_count_as_not_advertised() -> None:
    caps = parse_ehlo(EHLO_ALL, frozenset({"CHUNKING", "PIPELINING"}))
    assert not caps.chunking and not caps.pipelining and caps.dsn
    hs = Handshake("out.test", starttls="never", ignore=frozenset({"chunking"}))
    opened(hs, ("220 mx", b"EHLO out.test\r\n"), ("250-mx|250 CHUNKING", b""))
    assert not hs.capabilities.chunking
