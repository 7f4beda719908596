"""The junk filter's learning classifier: naive Bayes over tokens, Robinson's way, as
SpamAssassin's Bayes and bogofilter do it.

Tokens (`tokens`): the words of the subject (``s:``), of selected header fields (the From:
address and its domain, ``f:``; the mailer, ``x:``; the Received chain's host names,
``r:``), of the visible text (lower-cased, 3 to 24 characters, numbers folded to
"<num>"), the domains links go to (``u:``) and the attachments' types and extensions
(``a:``); each distinct token once, at most `max_tokens` of them in the order they appear.

Scoring (Gary Robinson, "A Statistical Approach to the Spam Problem", Linux Journal 2003;
the chi-square combination as in SpamBayes): for a token seen in `b` of `nspam` spam and `g`
of `nham` ham messages, p = (b/nspam) / (b/nspam + g/nham), moved toward the unknown x =
0.5 by its evidence: f = (s·x + n·p) / (s + n), n = b + g, s = `STRENGTH`. The `MAX_CLUES`
tokens farthest from 0.5 (at least `MIN_DEVIATION` from it) combine with Fisher's method:
S = 1 - C⁻¹(-2 ln Π(1-f), 2N), H = 1 - C⁻¹(-2 ln Π f, 2N), and the message's spam
probability is (1 + S - H) / 2: near 1 spam, near 0 ham, near 0.5 unsure (C⁻¹: the
chi-square distribution's upper tail, `chi2q`).

A classifier counts only once it has learnt at least `min_messages` messages of each class
(SpamAssassin's bayes_min_spam_num / bayes_min_ham_num): before that it says nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from postkeep.filters.junk.message import Parsed, addresses
from postkeep.filters.junk.rules import host_of, urls
from postkeep.mailauth.uridomains import registered_domain

STRENGTH = 1.0
UNKNOWN = 0.5
MIN_DEVIATION = 0.1
MAX_CLUES = 150
MAX_TOKENS = 1000

_WORD = re.compile(r"[^\W_][\w'$€£.-]{1,40}", re.UNICODE)
_NUMBER = re.compile(r"^[\d.,'$€£-]+$")
_HOSTNAME = re.compile(r"\b(?:[a-z0-9-]+\.)+[a-z]{2,63}\b")


def _words(text: str) -> Iterable[str]:
    # each distinct word looked at once, found by one findall over the lower-cased text
    for raw in dict.fromkeys(_WORD.findall(text.lower())):
        word = raw.strip(".-'")
        if word[0].isdigit() and _NUMBER.match(word):  # a word starts with a letter or digit
            yield "<num>"
        elif 3 <= len(word) <= 24:
            yield word


def tokens(m: Parsed, max_tokens: int = MAX_TOKENS) -> list[str]:
    """The message's distinct tokens, as the module docstring lists them."""
    out: dict[str, None] = {}

    def add(items: Iterable[str]) -> bool:
        for item in items:
            out.setdefault(item, None)
            if len(out) >= max_tokens:
                return False
        return True

    for _, address in addresses(m.header("from") or "")[:1]:
        domain = address.rpartition("@")[2].lower()
        add([f"f:{address.lower()}", f"f:{domain}"])
    mailer = m.header("x-mailer") or m.header("user-agent")
    if mailer:
        add([f"x:{w}" for w in _words(mailer)][:8])
    for received in m.headers("received")[:8]:
        add(f"r:{h}" for h in _HOSTNAME.findall(received.lower())[:4])
    if not add(f"s:{w}" for w in _words(m.subject)):
        return list(out)
    for url in urls(m):
        domain = registered_domain(host_of(url)) or host_of(url)
        if domain and not add([f"u:{domain}"]):
            return list(out)
    for a in m.attachments:
        ext = a.filename.rpartition(".")[2].lower() if "." in a.filename else ""
        add([f"a:{a.content_type}", *([f"a:.{ext}"] if ext else [])])
    add(_words(m.text()))
    return list(out)


@dataclass(frozen=True, slots=True)
class Verdict:
    probability: float  # 0 ham .. 1 spam
    clues: int  # tokens that counted


def token_probability(b: int, g: int, nspam: int, nham: int) -> float:
    """Robinson's f(w) for a token in `b` spam and `g` ham messages."""
    n = b + g
    if n == 0 or nspam == 0 or nham == 0:
        return UNKNOWN
    bad, good = min(1.0, b / nspam), min(1.0, g / nham)
    p = bad / (bad + good)
    return (STRENGTH * UNKNOWN + n * p) / (STRENGTH + n)


def chi2q(x2: float, v: int) -> float:
    """P(χ² ≥ x2) with `v` (even) degrees of freedom: the upper tail, as a series."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities: Iterable[float]) -> Verdict:
    """The Fisher-Robinson combination of the tokens' f(w) (see the module docstring)."""
    clues = sorted((p for p in probabilities if abs(p - UNKNOWN) >= MIN_DEVIATION),
                   key=lambda p: -abs(p - UNKNOWN))[:MAX_CLUES]
    if not clues:
        return Verdict(UNKNOWN, 0)
    n = len(clues)
    ln_spam = sum(math.log(max(1.0 - p, 1e-200)) for p in clues)
    ln_ham = sum(math.log(max(p, 1e-200)) for p in clues)
    s = 1.0 - chi2q(-2.0 * ln_spam, 2 * n)
    h = 1.0 - chi2q(-2.0 * ln_ham, 2 * n)
    return Verdict((1.0 + s - h) / 2.0, n)


def classify(counts: Mapping[str, tuple[int, int]], nspam: int, nham: int,
             message_tokens: Iterable[str]) -> Verdict:
    """The spam probability of a message's tokens under a classifier's counts."""
    return combine(token_probability(*counts[t], nspam, nham)
                   for t in message_tokens if t in counts)


BUCKETS = ((0.01, "BAYES_00"), (0.05, "BAYES_05"), (0.2, "BAYES_20"), (0.4, "BAYES_40"),
           (0.6, "BAYES_50"), (0.8, "BAYES_60"), (0.95, "BAYES_80"), (0.99, "BAYES_95"))


def symbol(probability: float) -> str:
    """SpamAssassin's name for the probability's band (BAYES_00 ... BAYES_99)."""
    return next((name for bound, name in BUCKETS if probability < bound), "BAYES_99")


def score(probability: float, spam_weight: float, ham_weight: float) -> float:
    """The probability as points: +`spam_weight` at 1, -`ham_weight` at 0, 0 at 0.5."""
    if probability >= UNKNOWN:
        return spam_weight * (probability - UNKNOWN) * 2.0
    return -ham_weight * (UNKNOWN - probability) * 2.0
