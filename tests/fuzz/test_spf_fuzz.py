"""Hypothesis fuzzing of the SPF record parser and macro expansion (RFC 7208 §4.6.1, §7):
a Record or SpfSyntaxError, a check or MacroError, an expansion within its bound; nothing
else, whatever the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.mailauth.spf import macros, record

FRAGMENTS = [
    "v=spf1", " ", "  ", "+", "-", "~", "?", "all", "include:", "a", "mx", "ptr", "ip4:",
    "ip6:", "exists:", "redirect=", "exp=", "foo=", ":", "/", "//", "0", "24", "33", "129",
    "032", "192.0.2.1", "::1", "::ffff:1.2.3.4", "2001:db8::/32", ".", "example.com",
    "example.com.", "%{", "}", "%{d}", "%{i}", "%{ir}", "%{l-}", "%{d2r}", "%{s0}",
    "%{o99999999999}", "%{p}", "%{c}", "%{H}", "%{v}", "%%", "%_", "%-", "%", "%x", "=", "\x00",
    "\r", "\n", "\t", "\x96", "\xef\xbb\xbf", "é", "xn--zckzah", "-com", "1up",
]
text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
)
VALUES = {letter: "x.y-z+w@example.com" for letter in "slodiphvcrt"}


@settings(max_examples=1500, deadline=None)
@given(text)
def test_parse_gives_a_record_or_a_syntax_error(body: str) -> None:
    try:
        parsed = record.parse("v=spf1 " + body)
    except record.SpfSyntaxError:
        return
    for mechanism in parsed.mechanisms:
        assert mechanism.name in record.MECHANISMS and mechanism.qualifier in "+-~?"
        assert 0 <= mechanism.cidr4 <= 32 and 0 <= mechanism.cidr6 <= 128
        if mechanism.domain_spec is not None:
            macros.check_domain_spec(mechanism.domain_spec)  # checked when parsed
            macros.domain_name(macros.expand(mechanism.domain_spec, VALUES))


@settings(max_examples=1500, deadline=None)
@given(text, st.booleans())
def test_macro_strings_check_and_expand_within_bounds(body: str, exp: bool) -> None:
    try:
        macros.check(body, exp=exp)
    except macros.MacroError:
        return
    try:
        expanded = macros.expand(body, {k: v * 50 for k, v in VALUES.items()})
    except macros.MacroError as e:
        assert "more than" in str(e)
        return
    assert len(expanded) <= macros.MAX_EXPANSION
    name = macros.domain_name(expanded)
    assert len(name) <= 253 or "." not in name
