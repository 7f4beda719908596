"""DMARC (postkeep.mailauth.dmarc) against policy records served by a real DNS server (NSD on
loopback, tests/dnsserver.py) through postkeep's resolver: the cases of RFC 9989 (tree walk,
psd=, np=, t=) and RFC 7489 (PSL, strict and relaxed alignment)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.mailauth.dmarc import (
    DmarcVerdict,
    OrgDomainMethod,
    Policy,
    author_domain,
    evaluate,
    org_domain,
    parse_record,
)
from postkeep.mailauth.dmarc.discover import walk_targets
from tests.dnsserver import AuthServer, auth_server

ZONE = [
    # a bank with p=reject, its subdomains under sp and np
    '_dmarc.bank TXT "v=DMARC1; p=reject; sp=none; np=reject; rua=mailto:agg@bank.test"',
    "bank A 192.0.2.10",
    "news.bank A 192.0.2.11",
    "bounce.bank MX 10 bank",
    # strict SPF and DKIM alignment
    '_dmarc.strict TXT "v=DMARC1; p=quarantine; aspf=s; adkim=s"',
    "strict A 192.0.2.20",
    "mail.strict A 192.0.2.21",
    # testing mode, and RFC 7489's pct=0
    '_dmarc.testing TXT "v=DMARC1; p=reject; t=y"',
    '_dmarc.sampled TXT "v=DMARC1; p=quarantine; pct=0"',
    # a public suffix operator (psd=y) with a policy for the names registered under it
    '_dmarc.psd TXT "v=DMARC1; p=reject; psd=y"',
    "a.psd A 192.0.2.30",
    "b.psd A 192.0.2.31",
    "x.a.psd A 192.0.2.32",
    # an organisation boundary below the apex (psd=n)
    '_dmarc.org TXT "v=DMARC1; p=none"',
    '_dmarc.unit.org TXT "v=DMARC1; p=reject; psd=n"',
    "x.unit.org A 192.0.2.40",
    # two DMARC records: neither counts (another TXT record there does not matter)
    '_dmarc.twice TXT "v=DMARC1; p=reject"',
    '_dmarc.twice TXT "v=DMARC1; p=none"',
    '_dmarc.once TXT "v=DMARC1; p=reject"',
    '_dmarc.once TXT "some other text"',
    # no policy anywhere
    "plain A 192.0.2.50",
    # a policy for a long name, to count the walk's queries
    '_dmarc.long TXT "v=DMARC1; p=reject"',
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """One NSD for the module, serving the zone "test" (so the walk's queries up to "test"
    are all answered) and a broken zone under it."""
    with auth_server(tmp_path_factory.mktemp("nsd")) as srv:
        srv.add_zone("test", ZONE)
        srv.add_broken_zone("broken.test")
        yield srv


def resolver(nameserver: str, timeout: float = 2.0) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=[nameserver], timeout=timeout, attempts=1))


def check(server: AuthServer, from_domain: str | None, spf: tuple[str, str] | None = None,
          dkim: tuple[tuple[str, str], ...] = (), **kw: object) -> DmarcVerdict:
    return asyncio.run(evaluate(resolver(server.nameserver), from_domain, spf, list(dkim),
                                **kw))  # type: ignore[arg-type]


def test_spoofed_reject_sender_fails_with_reject(server: AuthServer) -> None:
    v = check(server, "bank.test", spf=("pass", "attacker.example"),
              dkim=(("pass", "attacker.example"),))
    assert (v.result, v.policy, v.disposition) == ("fail", Policy.REJECT, Policy.REJECT)
    assert v.policy_domain == "bank.test" and v.record is not None
    assert v.record.rua == ("mailto:agg@bank.test",)
    assert v.auth_result() == "dmarc=fail (p=reject dis=reject) header.from=bank.test"


def test_relaxed_alignment_of_spf_and_dkim(server: AuthServer) -> None:
    spf = check(server, "news.bank.test", spf=("pass", "bounce.bank.test"))
    assert (spf.result, spf.spf_aligned, spf.dkim_aligned) == ("pass", True, False)
    assert spf.org_domain == "bank.test" and spf.disposition is Policy.NONE
    dkim = check(server, "bank.test", spf=("fail", "bank.test"),
                 dkim=(("fail", "bank.test"), ("pass", "news.bank.test")))
    assert (dkim.result, dkim.spf_aligned, dkim.dkim_aligned) == ("pass", False, True)
    # a passing identifier of another organisation does not align
    other = check(server, "bank.test", dkim=(("pass", "bank.test.attacker.example"),))
    assert other.result == "fail"


def test_strict_alignment(server: AuthServer) -> None:
    sub = check(server, "strict.test", spf=("pass", "mail.strict.test"),
                dkim=(("pass", "mail.strict.test"),))
    assert (sub.result, sub.policy) == ("fail", Policy.QUARANTINE)
    exact = check(server, "strict.test", spf=("pass", "STRICT.test."))
    assert exact.result == "pass" and exact.spf_aligned


def test_subdomain_and_nonexistent_domain_policies(server: AuthServer) -> None:
    sub = check(server, "news.bank.test")  # exists: sp=none
    assert (sub.result, sub.policy, sub.policy_domain) == ("fail", Policy.NONE, "bank.test")
    ghost = check(server, "nowhere.bank.test")  # NXDOMAIN for A, AAAA and MX: np=reject
    assert (ghost.result, ghost.policy, ghost.disposition) == (
        "fail", Policy.REJECT, Policy.REJECT)


def test_testing_mode_is_one_step_milder(server: AuthServer) -> None:
    t = check(server, "testing.test")
    assert (t.policy, t.disposition) == (Policy.REJECT, Policy.QUARANTINE)
    pct0 = check(server, "sampled.test")
    assert (pct0.policy, pct0.disposition) == (Policy.QUARANTINE, Policy.NONE)


def test_public_suffix_operator(server: AuthServer) -> None:
    """psd=y: its policy applies to the names under it, and each name one label below it is
    an organisation of its own (RFC 9989 §4.10.2)."""
    r = resolver(server.nameserver)
    assert asyncio.run(org_domain(r, "x.a.psd.test", OrgDomainMethod.TREE_WALK)) == "a.psd.test"
    v = check(server, "x.a.psd.test", dkim=(("pass", "b.psd.test"),))
    assert (v.result, v.policy, v.policy_domain) == ("fail", Policy.REJECT, "psd.test")
    aligned = check(server, "x.a.psd.test", dkim=(("pass", "a.psd.test"),))
    assert aligned.result == "pass"


def test_psd_n_sets_the_organisational_domain(server: AuthServer) -> None:
    r = resolver(server.nameserver)
    assert asyncio.run(org_domain(r, "x.unit.org.test", OrgDomainMethod.TREE_WALK)) == (
        "unit.org.test")
    assert asyncio.run(org_domain(r, "y.org.test", OrgDomainMethod.TREE_WALK)) == "org.test"
    v = check(server, "x.unit.org.test", spf=("pass", "org.test"))
    assert (v.result, v.policy, v.policy_domain) == ("fail", Policy.REJECT, "unit.org.test")


def test_several_records_are_none(server: AuthServer) -> None:
    assert check(server, "twice.test").result == "none"
    assert check(server, "once.test").policy is Policy.REJECT  # the other TXT is not DMARC
    none = check(server, "plain.test", spf=("pass", "plain.test"))
    assert (none.result, none.policy) == ("none", None)
    assert none.auth_result() == "dmarc=none (no policy) header.from=plain.test"


def test_the_walk_takes_at_most_eight_queries(server: AuthServer) -> None:
    name = "a.b.c.d.e.f.g.h.i.j.long.test"
    assert len(walk_targets(name)) == 8
    before = server.query_count("TXT")
    v = check(server, name)
    assert (v.result, v.policy_domain) == ("fail", "long.test")
    assert server.query_count("TXT") - before <= 8 + 8  # policy walk, then the org walk


def test_dns_failure_is_temperror(server: AuthServer) -> None:
    v = check(server, "x.broken.test", spf=("pass", "x.broken.test"))
    assert v.result == "temperror" and v.policy is None
    assert v.auth_result().startswith("dmarc=temperror (")


def test_a_silent_nameserver_is_temperror_within_the_timeout(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        r = resolver(f"127.0.0.1:{port}", timeout=5.0)
        v = asyncio.run(evaluate(r, "bank.test", None, [], timeout=0.5))
    finally:
        silent.close()
    assert (v.result, v.reason) == ("temperror", "DNS lookups timed out")


def test_psl_method_and_tree_walk_differ_where_the_list_knows_better(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """RFC 7489's Organizational Domain comes from the Public Suffix List: blogspot.com is a
    suffix there, so a.blogspot.com is an organisation; the tree walk, finding only a record
    at blogspot.com, makes blogspot.com the organisation."""
    with auth_server(tmp_path_factory.mktemp("nsd")) as srv:
        srv.add_zone("com", ['_dmarc.blogspot TXT "v=DMARC1; p=none"',
                             '_dmarc.shop.example TXT "v=DMARC1; p=reject"'])
        r = resolver(srv.nameserver)
        psl, walk = OrgDomainMethod.PSL, OrgDomainMethod.TREE_WALK
        assert asyncio.run(org_domain(r, "a.blogspot.com", psl)) == "a.blogspot.com"
        assert asyncio.run(org_domain(r, "a.blogspot.com", walk)) == "blogspot.com"
        # a record below the PSL's organisation: the walk finds it, RFC 7489 does not look
        spf = ("pass", "bounce.shop.example.com")
        v = asyncio.run(evaluate(r, "mail.shop.example.com", spf, [], method=walk))
        assert (v.result, v.policy_domain, v.org_domain) == (
            "pass", "shop.example.com", "shop.example.com")
        v = asyncio.run(evaluate(r, "mail.shop.example.com", spf, [], method=psl))
        assert (v.result, v.policy_domain) == ("none", "")


def test_author_domain() -> None:
    assert author_domain(['"Bank" <CEO@YourBank.Example>']) == "yourbank.example"
    assert author_domain(["a@x.example, b@y.example"]) is None  # two authors
    assert author_domain(["a@x.example", "b@x.example"]) is None  # two From fields
    assert author_domain([]) is None
    assert author_domain(["no address here"]) is None
    assert author_domain(["user@localhost"]) is None
    assert author_domain(["x" * 5000 + "@x.example"]) is None
    assert author_domain(["Group: a@g.example;"]) == "g.example"


def test_no_author_domain_is_permerror(server: AuthServer) -> None:
    v = check(server, None)
    assert v.result == "permerror"
    assert v.auth_result() == "dmarc=permerror (no single author address in From)"


@pytest.mark.parametrize("text, expected", [
    ("v=DMARC1; p=reject", ("reject", None, None, "u", False)),
    ("v=DMARC1;p=quarantine;sp=reject;np=none;psd=n;t=y;",
     ("quarantine", "reject", "none", "n", True)),
    ("v=DMARC1 ; P = Reject ; foo=bar", ("reject", None, None, "u", False)),  # unknown tag
    ("v=DMARC1; p=bogus; rua=mailto:r@x.example", ("none", None, None, "u", False)),
    ("v=DMARC1; p=reject; sp=bogus; psd=maybe; t=perhaps", ("reject", None, None, "u", False)),
    ("v=DMARC1; p=reject; p=none", ("reject", None, None, "u", False)),  # the first counts
])
def test_record_parsing(text: str, expected: tuple[object, ...]) -> None:
    r = parse_record(text)
    assert r is not None
    assert (r.p.value, r.sp and r.sp.value, r.np and r.np.value, r.psd, r.testing) == expected


@pytest.mark.parametrize("text", [
    "p=reject; v=DMARC1",  # v must come first
    "v=DMARC2; p=reject",
    "v=dmarc1; p=reject",
    "v=DMARC1; p=bogus",  # no usable p and no report address
    "v=DMARC1; p=reject; " + "x=y; " * 40,  # too many tags
    "v=DMARC1; p=reject; rua=" + "a" * 5000,  # too long
    "",
])
def test_not_a_record(text: str) -> None:
    assert parse_record(text) is None


def test_report_uris() -> None:
    r = parse_record("v=DMARC1; p=none; rua=mailto:a@x.example!10m, https://r.example/,"
                     " mailto:b@y.example; ruf=mailto:f@x.example; fo=1:d")
    assert r is not None
    assert r.rua == ("mailto:a@x.example", "mailto:b@y.example")
    assert (r.ruf, r.fo) == (("mailto:f@x.example",), "1:d")
    assert parse_record("v=DMARC1; p=none; fo=9").fo == "0"  # type: ignore[union-attr]
