"""The junk filter's content rules: what the subject and the visible text say, in the manner
of SpamAssassin's body and header tests (its ``ADVANCE_FEE_*``, ``LOTTO_*``, ``DRUGS_*``,
``DEAR_FRIEND``, ``UPPERCASE_*`` families) and rspamd's phrase and shape checks.

A phrase family is one compiled, case-insensitive regular expression of literal phrases
between word boundaries; its symbol's score grows with the number of distinct phrases it
found (at most `MAX_MATCHES` looked at), to a cap below the tag score: one phrase is a hint,
several families together make spam. The text read is the subject and the first
`MAX_SCAN` characters of the visible text (plain parts, then HTML's), whitespace folded to
single spaces, so a phrase is matched across line breaks; lines quoted in a reply ("> ...",
RFC 3676 §4.5) are left out: they are what the other side wrote. Every pattern is a plain
alternation of literals, character classes and bounded repeats with nothing nested: their
matching time is linear in the text.

- ``ADVANCE_FEE`` (next of kin, beneficiary, transfer of the fund, ...), ``LOTTERY`` (won,
  selected, claim your prize, ...), ``ACCOUNT_THREAT`` (verify your account, account
  suspended, unusual activity, ...; not after a "never" or "not" just before it, as honest
  services write "we will never ask you to confirm your password") and ``PHISH_LINK`` when
  such a message links to another registered domain than its From: address's; ``PHARMA``
  (drug names, no prescription) and ``DRUG_OBFUSCATED`` (v1agra, c-i-a-l-i-s: never
  honest); ``SALES_PITCH`` (act now, risk free, 100% guaranteed, click here, ...);
  ``MONEY_MAKING`` (work from home, guaranteed returns, ...); ``EXTORTION`` (hacked your
  device, bitcoin wallet, ...); ``ADULT``;
  ``MILLIONS`` (a sum in millions: "$15,500,000", "4.5 million dollars"); ``BTC_ADDRESS``
  (a Bitcoin address, base58 or bech32, not inside a URL: where extortion and fake
  investments want the money);
- greetings: ``DEAR_FRIEND`` (friend, beneficiary, winner) and ``DEAR_GENERIC`` (customer,
  user, sir/madam, account holder) in the text's first `GREETING_SCAN` characters;
- shape: ``EXCLAIM_RUN`` (three or more "!" in a row in the text), ``SUBJ_EXCLAIM`` ("!!"
  in the subject), ``UPPERCASE_50`` / ``UPPERCASE_75`` (at least `CAPS_MIN_LETTERS`
  letters of which half or three quarters are capitals), ``SUBJ_MONEY`` (a currency sign
  or code with an amount in the subject).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from postkeep.filters.junk.base import Facts, Hits, host_of, urls
from postkeep.filters.junk.literals import Needles, anywhere, required_literals
from postkeep.filters.junk.message import Parsed, addresses
from postkeep.mailauth.uridomains import registered_domain

MAX_SCAN = 64 * 1024  # characters of visible text read
MAX_MATCHES = 50  # matches of one family looked at
GREETING_SCAN = 1000
CAPS_MIN_LETTERS = 150
NEGATION_SCAN = 40  # characters before a phrase looked at for a "never" or "not"
# The phrase patterns are matched against the lower-cased text, without re.IGNORECASE: Python's
# re runs a case-folding alternation several times slower (measured: 8x on 5 KB of text).
_NEGATION = re.compile(r"\b(?:never|not|don't|won't|doesn't|no need to)\b")


@dataclass(frozen=True, slots=True)
class Family:
    """A phrase family: its symbol, its pattern, its score by distinct phrases found, and the
    literals one of which any match contains (`required_literals`; empty:
    the pattern is always run). A text with none of them is passed by with a few substring
    tests instead of the regular expression's scan, which in Python's `re` tries every
    alternative at every position: most mail contains no phrase of any family."""

    symbol: str
    pattern: re.Pattern[str]
    scores: tuple[float, ...]  # for 1, 2, ... distinct phrases; the last one beyond
    negatable: bool = False  # "we will never ask you to verify your account" does not count
    needles: tuple[str, ...] = ()

    def score(self, text: str) -> float:
        """The family's points in `text` (lower-cased)."""
        return self.matched(text) if anywhere(self.needles, text) else 0.0

    def matched(self, text: str) -> float:
        """`score` with the needles known to be there (`Needles.present`)."""
        found: set[str] = set()
        for i, match in enumerate(self.pattern.finditer(text)):
            if i >= MAX_MATCHES:
                break
            before = text[max(0, match.start() - NEGATION_SCAN) : match.start()]
            if not (self.negatable and _NEGATION.search(before)):
                found.add(match.group(0).lower())
        return self.scores[min(len(found), len(self.scores)) - 1] if found else 0.0


def _family(symbol: str, alternatives: Sequence[str], scores: tuple[float, ...],
            negatable: bool = False) -> Family:
    """A family of `alternatives` between word boundaries, for lower-cased text."""
    pattern = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")
    return Family(symbol, pattern, scores, negatable, required_literals("|".join(alternatives)))


_MONEY = r"(?:\$|€|£|\b(?:us\$|usd|eur|gbp))"
ADVANCE_FEE = _family("ADVANCE_FEE", (
    r"next of kin", r"beneficiary", r"(?:my|our) late (?:husband|father|client|wife)",
    r"late client", r"deceased (?:client|customer|husband|father)",
    r"transfer (?:of )?(?:the|this) (?:fund|funds|sum|money)", r"foreign (?:partner|account)",
    r"(?:consignment|diplomatic) (?:box|bag)", r"barrister", r"strict(?:est)? confidence",
    r"atm (?:visa |master )?card", r"inheritance", r"unclaimed (?:fund|funds|inheritance)",
    r"compensation (?:fund|payment)", r"dormant account", r"security (?:company|vault)",
    r"(?:fund|funds|payment) (?:release|transfer) (?:order|approval|code)",
    r"percent of the (?:total )?(?:fund|funds|sum)", r"\d{1,2} ?% of the (?:total )?(?:fund|sum)",
    r"(?:mutual|business) (?:benefit|proposal)", r"please (?:reply|respond) urgently",
    r"(?:central|reserve) bank of (?:nigeria|ghana|benin|togo)", r"deposit(?:ed)? the sum",
    r"(?:western union|money ?gram)", r"humanitarian (?:work|project|purposes)",
), (1.0, 2.0, 3.0, 3.5))
LOTTERY = _family("LOTTERY", (
    r"lottery", r"lotto", r"sweepstakes?", r"winning (?:number|numbers|ticket|notification)",
    r"(?:cash|grand|lucky) (?:prize|draw|winner)", r"lucky (?:number|numbers)",
    r"claim(?:s)? (?:your|the) (?:prize|winnings|reward|award|funds)",
    r"prize (?:money|award|claim)", r"you (?:have|'ve) (?:been )?(?:won|selected)",
    r"(?:e-?mail|ticket|address) (?:was|has been) selected", r"award(?:ed)? (?:the )?sum",
    r"claims? agent", r"international (?:promotion|draw)",
    r"(?:promotion|draw|winning) (?:program|programme)",
), (1.0, 2.0, 3.0))
ACCOUNT_THREAT = _family("ACCOUNT_THREAT", (
    r"verify your (?:account|identity|information|details|mailbox)",
    r"(?:account|mailbox|card) (?:has been |was |will be |is )?(?:temporarily )?"
    r"(?:suspended|locked|limited|disabled|deactivated|terminated|blocked)",
    r"unusual (?:sign-in |login |account )?activity", r"suspicious (?:activity|login|sign-in)",
    r"confirm your (?:password|account|identity|billing|banking|payment)",
    r"update your (?:billing|payment|account|banking) (?:information|details|info)",
    r"(?:mailbox|e-?mail|storage) (?:quota|storage) (?:is |has )?(?:full|exceeded|almost)",
    r"failure to (?:verify|comply|update|confirm)",
    r"(?:re-?)?validate your", r"unauthori[sz]ed (?:access|login|transaction|charge)",
    r"avoid (?:suspension|termination|deactivation|closure)", r"(?:log|sign) ?in to restore",
    r"restore (?:your )?(?:account|access)", r"permanently (?:closed|deleted|disabled)",
), (1.0, 1.8, 2.5), negatable=True)
PHARMA = _family("PHARMA", (
    r"viagra", r"cialis", r"levitra", r"kamagra", r"sildenafil", r"tadalafil", r"xanax",
    r"valium", r"tramadol", r"ambien", r"phentermine", r"vicodin", r"oxycodone", r"propecia",
    r"no prescription", r"without (?:a )?prescription", r"online pharmacy",
    r"(?:canadian|generic) (?:pharmacy|drugs|meds|viagra|cialis)", r"erectile dysfunction",
    r"male enhancement", r"(?:penis|penile) enlargement", r"weight loss pills?", r"cheap meds",
), (1.5, 2.5, 3.0))
SALES_PITCH = _family("SALES_PITCH", (
    r"act now", r"risk[- ]free", r"100 ?% (?:free|guaranteed|satisfaction|legal|legit)",
    r"limited time (?:offer|only)", r"click here", r"order now", r"buy now",
    r"once in a lifetime", r"this is not (?:a )?spam", r"no (?:catch|obligation|hidden fees)",
    r"satisfaction guaranteed", r"lowest prices?", r"best prices?", r"replica (?:watches|bags)",
    r"what are you waiting for", r"don'?t (?:delete|miss out)", r"special promotion",
    r"apply now", r"pre-?approved", r"credit (?:repair|score fix)", r"debt relief",
    r"(?:online )?casino", r"while supplies last", r"urgent(?:ly)? (?:reply|response)",
    r"incredible (?:deal|offer)", r"(?:free|bonus) (?:gift|money|cash|access)",
), (0.5, 1.0, 1.5, 2.0))
MONEY_MAKING = _family("MONEY_MAKING", (
    r"work (?:from|at) home", r"make money (?:fast|online|from home)", r"extra income",
    r"financial freedom", r"guaranteed (?:income|returns|profits?|results)",
    r"be your own boss", r"investment opportunity", r"passive income",
    r"earn " + _MONEY + r" ?\d[\d,.]{0,12} (?:per|a|every) (?:day|week|hour)",
    r"(?:bitcoin|crypto|forex) (?:investment|trading (?:platform|robot|bot)|profits?)",
    r"double your (?:money|income|bitcoin|investment)",
), (0.8, 1.6, 2.4, 3.0))
EXTORTION = _family("EXTORTION", (
    r"(?:i )?(?:have )?hacked your (?:device|computer|account|phone)",
    r"access to your (?:device|computer|webcam|camera|contacts)",
    r"(?:recorded|recording) (?:a )?(?:video )?(?:of )?you", r"your webcam",
    r"(?:bitcoin|btc) (?:wallet|address)", r"adult (?:websites?|videos?|sites?)",
    r"(?:contacts|colleagues) and (?:family|relatives)", r"pay(?:ment)? in bitcoin",
    r"(?:malware|trojan|spyware) (?:on|to) your",
), (1.0, 2.0, 3.0, 4.0))
ADULT = _family("ADULT", (
    r"hot singles", r"lonely (?:wives|women|housewives|girls)", r"adult dating",
    r"meet (?:local |hot )?(?:singles|women|girls)", r"sexy (?:girls|women|singles)",
    r"hook ?up tonight", r"casual (?:sex|encounters)", r"webcam (?:girls|models)",
), (1.0, 2.0, 2.5))
FAMILIES: Sequence[Family] = (ADVANCE_FEE, LOTTERY, ACCOUNT_THREAT, PHARMA, SALES_PITCH,
                              MONEY_MAKING, EXTORTION, ADULT)

_MILLIONS = re.compile(
    _MONEY + r" ?\d{1,3}(?:[,.]\d{3}){2,}\b|\b\d{1,3}(?:[.,]\d{1,2})? ?(?:million|m) "
    r"(?:(?:us |united states |american )?(?:dollars|usd|euros?|pounds|gbp|eur))")
_OBFUSCATED: dict[str, str] = {
    "a": "a@4àáâä", "i": "i1!|lìíî", "o": "o0òóô", "e": "e3èéê", "s": "s5$", "l": "l1|",
}
_GREETING = re.compile(  # not "my dear friend"; "Dear Friend," opening a letter
    r"(?<!my )(?<!our )\bdear (?:(friend|friends|beneficiary|winner|lucky winner|fund owner)"
    r"|(customer|valued customer|client|user|e-?mail user|webmail user|member|account "
    r"(?:holder|owner)|sir or madam|sir/madam|sir/ madam))\b ?[,:!\n]", re.IGNORECASE)
_BTC_ADDRESS = re.compile(r"(?<![\w/=?&#.%+-])(?:bc1[ac-hj-np-z02-9]{25,59}"
                          r"|[13][a-km-zA-HJ-NP-Z1-9]{25,34})\b")
_QUOTED = re.compile(r"^[ \t]{0,8}>.*$", re.MULTILINE)
_EXCLAIM_RUN = re.compile(r"!{3}")
_SUBJ_MONEY = re.compile(r"[$€£] ?\d|\b\d[\d,.]{0,12} ?(?:usd|eur|gbp|dollars|euros)\b",
                         re.IGNORECASE)


def _obfuscated(word: str) -> str:
    """A pattern for `word` spelt with lookalike characters or separators between letters."""
    letters = [f"[{re.escape(_OBFUSCATED.get(c, c))}]" for c in word]
    return r"[\W_]?".join(letters)


_DRUGS = ("viagra", "cialis", "levitra", "xanax", "valium", "tramadol", "vicodin",
          "phentermine", "propecia", "kamagra")
_DRUG_FIRST = "".join(sorted({_OBFUSCATED.get(w[0], w[0]) for w in _DRUGS}))
_DRUG_SPELT = re.compile(  # for lower-cased text; the look-ahead at the first letters lets
    # `re` skip ahead to them instead of trying every alternative at every position
    f"(?=[{re.escape(_DRUG_FIRST)}])" r"(?<![^\W_])(?:" + "|".join(_obfuscated(w) for w in _DRUGS)
    + r")(?![^\W_])")
# every family's needles and MILLIONS', looked for in one pass over the text
_NEEDLES = Needles({**{f.symbol: f.needles for f in FAMILIES},
                    "MILLIONS": required_literals(_MILLIONS.pattern)})
BTC_MIN = 26  # characters of the shortest address the pattern finds


def scanned(m: Parsed) -> str:
    """The text the phrases are looked for in: the subject, then `MAX_SCAN` characters of
    the visible text without the lines a reply quotes, whitespace folded."""
    text = "\n".join([*m.plain, *(h.visible for h in m.html)])[:MAX_SCAN]
    text = _QUOTED.sub("", text)
    return " ".join(f"{m.subject}\n{text}".replace("\u2019", "'").split())


def _from_domain(m: Parsed) -> str:
    for _, addr in addresses(m.header("from") or "")[:1]:
        domain = addr.rpartition("@")[2].lower()
        return registered_domain(domain) or domain
    return ""


def phrases(m: Parsed, _: Facts) -> Hits:
    text = scanned(m)
    lowered = text.lower()
    hits: Hits = []
    present = _NEEDLES.present(lowered)
    for family in FAMILIES:
        points = family.matched(lowered) if family.symbol in present else 0.0
        if points:
            hits.append((family.symbol, points))
    if any(name == ACCOUNT_THREAT.symbol for name, _ in hits):
        own = _from_domain(m)
        for url in urls(m):
            host = host_of(url)
            if (registered_domain(host) or host) != own:
                hits.append(("PHISH_LINK", 1.5))
                break
    for match in _DRUG_SPELT.finditer(lowered):
        if match.group(0).lower() not in _DRUGS:
            hits.append(("DRUG_OBFUSCATED", 2.5))
            break
    if "MILLIONS" in present and _MILLIONS.search(lowered):
        hits.append(("MILLIONS", 1.0))
    # an address is a run of `BTC_MIN` or more characters without a space
    if max(map(len, text.split(" "))) >= BTC_MIN and _BTC_ADDRESS.search(text):
        hits.append(("BTC_ADDRESS", 1.0))
    return hits


_ASCII_LETTERS = string.ascii_letters.encode()
_ASCII_UPPER = string.ascii_uppercase.encode()


def _letters(text: str) -> tuple[int, int]:
    """The letters of `text`, and its capitals (ASCII text counted by `bytes.translate`)."""
    if not text.isascii():
        return sum(map(str.isalpha, text)), sum(map(str.isupper, text))
    data = text.encode("ascii")
    return (len(data) - len(data.translate(None, _ASCII_LETTERS)),
            len(data) - len(data.translate(None, _ASCII_UPPER)))


def shape(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    body = "\n".join([*m.plain, *(h.visible for h in m.html)])[:MAX_SCAN]
    greeting = _GREETING.search(body[:GREETING_SCAN])
    if greeting:
        hits.append(("DEAR_FRIEND", 1.5) if greeting.group(1) else ("DEAR_GENERIC", 0.8))
    if _EXCLAIM_RUN.search(body):
        hits.append(("EXCLAIM_RUN", 0.5))
    if "!!" in m.subject:
        hits.append(("SUBJ_EXCLAIM", 0.5))
    letters, upper = _letters(body)
    if letters >= CAPS_MIN_LETTERS and upper * 4 >= letters * 3:
        hits.append(("UPPERCASE_75", 1.5))
    elif letters >= CAPS_MIN_LETTERS and upper * 2 >= letters:
        hits.append(("UPPERCASE_50", 1.0))
    if _SUBJ_MONEY.search(m.subject):
        hits.append(("SUBJ_MONEY", 0.5))
    return hits


RULES = (phrases, shape)
