"""Hypothesis on the inbound checks' parsers: DMARC records, From fields, Authentication-Results
authserv-ids and the forged-field sweep, ARC fields and chains never raise and stay within their
bounds."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.mailauth.arc.headers import MAX_INSTANCES, ArcStructureError, parse_aar
from postkeep.mailauth.arc.verify import ChainVerifier
from postkeep.mailauth.authres import authserv_id, strip_own
from postkeep.mailauth.dmarc import author_domain, parse_record
from postkeep.mailauth.dmarc.record import MAX_URIS

TAGS = st.sampled_from(["v", "p", "sp", "np", "psd", "t", "adkim", "aspf", "rua", "ruf", "fo",
                        "pct", "x", ""])
VALUES = st.one_of(st.sampled_from(["DMARC1", "reject", "none", "quarantine", "y", "n", "s",
                                    "r", "mailto:a@b.example", "0", "1:d"]), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TAGS, VALUES), max_size=40), st.booleans())
def test_dmarc_records(tags: list[tuple[str, str]], versioned: bool) -> None:
    text = "; ".join(f"{k}={v}" for k, v in ([("v", "DMARC1")] if versioned else []) + tags)
    record = parse_record(text)
    if record is not None:
        assert text.startswith("v=DMARC1")
        assert len(record.rua) <= MAX_URIS and len(record.ruf) <= MAX_URIS
        assert record.psd in ("y", "n", "u")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_from_fields(value: str) -> None:
    domain = author_domain([value])
    assert domain is None or (domain == domain.lower() and "." in domain)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_authentication_results_sweep(raw: bytes) -> None:
    authserv_id(b"Authentication-Results:" + raw)
    block = b"Authentication-Results: mx.example; dmarc=pass\r\n" + raw + b"\r\n"
    kept, removed = strip_own(block, "mx.example")
    assert removed >= 1 and len(kept) <= len(block)


ARC_NAMES = st.sampled_from([b"ARC-Seal", b"ARC-Message-Signature",
                             b"ARC-Authentication-Results", b"From"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ARC_NAMES, st.binary(max_size=200)), max_size=8), st.binary(max_size=100))
def test_arc_chains(fields: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Any ARC fields: the chain is none or fails (nothing is signed), never an exception,
    and the AAR parser either parses or says why not."""
    block = b"".join(name + b": " + value.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
                     for name, value in fields)
    verifier = ChainVerifier(block)
    verifier.update(body)
    assert len(verifier.key_names()) <= 2 * MAX_INSTANCES
    result = verifier.result({})
    assert result.result in ("none", "fail")
    assert (result.result == "none") == (not any(n.startswith(b"ARC") for n, _ in fields))
    for name, value in fields:
        if name == b"ARC-Authentication-Results":
            with contextlib.suppress(ArcStructureError):
                aar = parse_aar(name + b": " + value + b"\r\n")
                assert 1 <= aar.instance <= MAX_INSTANCES and aar.authserv_id
