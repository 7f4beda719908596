"""Hypothesis fuzzing of DKIM verification (postkeep.mailauth.dkim): whatever the header
fields, tag lists and key records, the verifier gives one result per signature (at most
`max_signatures`) and raises nothing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.mailauth.dkim.canon import parse_header_fields
from postkeep.mailauth.dkim.keys import generate_key, public_key_value
from postkeep.mailauth.dkim.sign import DkimSigner
from postkeep.mailauth.dkim.tags import KeyRecordError, parse_key_record
from postkeep.mailauth.dkim.verify import MessageVerifier

_KEY = generate_key("ed25519")
_MESSAGE = b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"
_FIELD = DkimSigner("example.test", "s", _KEY, clock=lambda: 1e9).sign(_MESSAGE)

# Pieces of tag lists and fields: the separators, folding, tags that matter, odd octets.
_PIECES = [b";", b"=", b" ", b"\t", b"\r\n ", b"\r\n", b"\r", b":", b"v=1", b"a=rsa-sha256",
           b"a=ed25519-sha256", b"a=rsa-sha1", b"b=", b"bh=", b"d=example.test", b"s=s",
           b"h=from", b"h=from:from", b"i=@example.test", b"l=3", b"l=99", b"t=1", b"x=2",
           b"c=simple/relaxed", b"q=dns/txt", b"k=rsa", b"p=", b"AAAA", b"\xc3\xa9", b"\xff",
           b"\x00", b"DKIM-Signature:", b"From: x\r\n", b"v=DKIM1", b"k=ed25519", b"t=s",
           b"t=y", b"h=sha256", b"s=email", b"p=" + public_key_value(_KEY).encode()]
_fragments = st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join)


def _mutated(draw_fragments: bytes, cut: int) -> bytes:
    """Our signature field with `draw_fragments` spliced in at `cut`."""
    cut %= len(_FIELD) - 2
    return _FIELD[:cut] + draw_fragments + _FIELD[cut:]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.lists(st.tuples(_fragments, st.integers(0, 10_000)), max_size=12),
       record=_fragments, body=st.binary(max_size=64), limit=st.integers(1, 12))
def test_verifier_never_raises(fields: list[tuple[bytes, int]], record: bytes, body: bytes,
                               limit: int) -> None:
    header_block = b"".join(_mutated(f, c) for f, c in fields) + _MESSAGE.split(b"\r\n\r\n")[0]
    verifier = MessageVerifier(header_block + b"\r\n", now=1e9, max_signatures=limit)
    verifier.update(body)
    names = verifier.key_names()
    results = verifier.results({name: [record, public_key_value(_KEY).encode()]
                                for name in names})
    # A splice may end a field, start one or break its name: count what the header has.
    count = sum(f.key == "dkim-signature" for f in parse_header_fields(header_block))
    assert len(results) == min(count, limit) == verifier.signatures
    assert verifier.ignored == max(0, count - limit)
    assert all(r.result in ("pass", "fail", "neutral", "policy", "temperror", "permerror")
               for r in results)


@given(record=_fragments)
def test_key_record_parser_raises_only_its_error(record: bytes) -> None:
    try:
        parsed = parse_key_record(record)
    except KeyRecordError:
        return
    assert parsed.key_type in ("rsa", "ed25519")
