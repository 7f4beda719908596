"""The junk filter (`filters.base.Filter`): the rules' score plus the classifier's, and what
the recipients said of the sender (docs/architecture.md, "The junk filter").

A message is read (`junk.message.parse`, its first `[junk] max_size` octets; in a thread
for a message spooled to disk or larger than `INLINE_MAX`, on the loop otherwise), the rules run
(`junk.rules`), its tokens are looked up in one store read (`Store.junk_counts`, which asks
for them only of classifiers that have learnt enough): the single local recipient's
classifier if it has learnt enough of both classes, else the instance's, else none
(`junk.classifier`).

Then, on the MX, the sender (the From: address, else the envelope's) is looked up for the
recipients: their own allow or block entries (an address beats a domain), else their
domain's, else whether they have written to it (correspondents). Mail all recipients allow
is never junk (the GTUBE test string aside); mail any recipient blocks is. The allowance is
not given when the MX found the From: forged (DMARC fail, or SPF fail without a DKIM pass):
an allow-list must not let a forger in. A message to several local accounts gets one
verdict: the instance's classifier and every recipient's lists.

Verdicts: GTUBE refuses (554 5.7.1) in both directions. On the MX a score of `tag_score` or
more tags the message (``X-Spam-Status: Yes``) and files it into `mailbox`; past a set
`reject_score` it is refused. On submission a score of `outbound_reject_score` or more
refuses it. `classify` gives the score and symbols alone (for a bench script).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from postkeep.config.junk import JunkConfig
from postkeep.filters.base import Action, Direction, FilterResult, ScanContext
from postkeep.filters.junk import classifier
from postkeep.filters.junk.message import addresses, parse
from postkeep.filters.junk.rules import GTUBE_SCORE, Facts, evaluate
from postkeep.store.api import JunkCounts, JunkListEntry, Store
from postkeep.store.spool import MessageData, SpooledText

GLOBAL = 0  # the instance's classifier's scope
INLINE_MAX = 64 * 1024  # octets of a message in memory judged on the loop; larger: in a thread


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the message alone says: rule hits, tokens, the sender's address."""

    hits: list[tuple[str, float]]
    tokens: list[str]
    sender: str


@dataclass(frozen=True, slots=True)
class Judgement:
    score: float
    symbols: tuple[str, ...]
    gtube: bool
    listed: str = ""  # "allow", "block" or "" (the recipients' say about the sender)
    why: str = ""  # which list, or "correspondent"


def analyse(data: MessageData, cfg: JunkConfig, facts: Facts, mail_from: str) -> Analysis:
    """The message's rule hits and tokens (CPU work: the caller runs it in a thread)."""
    text = bytes(data[0 : min(len(data), cfg.max_size)])
    parsed = parse(text)
    hits = evaluate(parsed, facts)
    tokens = classifier.tokens(parsed, cfg.max_tokens) if cfg.classifier else []
    sender = next((a for _, a in addresses(parsed.header("from") or "") if "@" in a), mail_from)
    return Analysis(hits, tokens, sender)


def _decide(entries: list[JunkListEntry], owner: str) -> JunkListEntry | None:
    """`owner`'s most specific entry: an address before a domain, a longer domain first."""
    mine = [e for e in entries if e.owner == owner]
    return max(mine, key=lambda e: ("@" in e.entry, len(e.entry)), default=None)


def forged(facts: Facts) -> bool:
    """Whether the MX found the From: forged (its allowances then do not count)."""
    auth = facts.auth
    return auth.get("dmarc") == "fail" or (auth.get("spf") == "fail"
                                           and auth.get("dkim") != "pass")


class JunkFilter:
    """`filters.base.Filter` for the built-in junk filter."""

    name = "junk"
    header = ""  # its verdict is in X-Spam-Status and X-Spam-Score (`filters.headers`)

    def __init__(self, cfg: JunkConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.timeout = cfg.timeout

    def fails_open(self, direction: Direction) -> bool:
        return True  # a built-in that failed is a bug: logged, the mail goes on

    def _bayes(self, counts: Mapping[int, JunkCounts], scopes: list[int],
               tokens: list[str]) -> tuple[str, float] | None:
        """The first of `scopes` that learnt enough: its verdict as a hit, else None."""
        for scope in scopes:
            c = counts[scope]
            if min(c.spam, c.ham) >= self.cfg.min_messages:
                verdict = classifier.classify(c.tokens, c.spam, c.ham, tokens)
                points = classifier.score(verdict.probability, self.cfg.spam_weight,
                                          self.cfg.ham_weight)
                return classifier.symbol(verdict.probability), round(points, 2)
        return None

    @staticmethod
    def _owners(sender: str, context: ScanContext) -> list[str]:
        """Whose lists speak of `sender`: the recipients' accounts and domains."""
        if context.direction is not Direction.INBOUND or not context.accounts \
                or "@" not in sender:
            return []
        domains = {r.address.rpartition("@")[2].lower() for r in context.envelope.recipients}
        return [f"a:{a}" for a in context.accounts] + [f"d:{d}" for d in sorted(domains)]

    @staticmethod
    def _lists(entries: list[JunkListEntry], wrote: frozenset[int],
               context: ScanContext) -> tuple[str, str]:
        """The recipients' say about the sender: ("allow" | "block" | "", why)."""
        domain = max((e for e in entries if e.owner.startswith("d:")),
                     key=lambda e: ("@" in e.entry, len(e.entry)), default=None)
        says: list[tuple[str, str]] = []
        for account in context.accounts:
            entry = _decide(entries, f"a:{account}") or domain
            if entry is not None:
                says.append((entry.kind, f"{entry.kind}-listed {entry.entry}"))
            elif account in wrote:
                says.append(("allow", "correspondent"))
            else:
                says.append(("", ""))
        blocked = next((s for s in says if s[0] == "block"), None)
        if blocked is not None:
            return blocked
        if all(kind == "allow" for kind, _ in says):
            return "allow", says[0][1]
        return "", ""

    async def _look_up(self, analysis: Analysis, context: ScanContext
                       ) -> tuple[tuple[str, float] | None, str, str]:
        """The classifier's hit and the lists' say, from one store read (none when neither
        has anything to ask)."""
        accounts = context.accounts if context.direction is Direction.INBOUND else ()
        scopes = ([accounts[0], GLOBAL] if len(accounts) == 1 else [GLOBAL]) \
            if analysis.tokens else []
        owners = self._owners(analysis.sender, context)
        if not scopes and not owners:
            return None, "", ""
        found = await self.store.junk_lookup(scopes, analysis.tokens, self.cfg.min_messages,
                                             owners, context.accounts if owners else (),
                                             analysis.sender)
        bayes = self._bayes(found.counts, scopes, analysis.tokens)
        listed, why = self._lists(found.entries, found.wrote, context) if owners else ("", "")
        return bayes, listed, why

    async def classify(self, message: MessageData, context: ScanContext) -> Judgement:
        """The message's score and symbols, and the recipients' say about its sender."""
        facts = Facts.from_summary(context.auth_results)
        if isinstance(message, SpooledText) or len(message) > INLINE_MAX:  # off the loop
            analysis = await asyncio.to_thread(analyse, message, self.cfg, facts,
                                               context.envelope.mail_from)
        else:  # small, in memory: a thread's hand-over would cost more than it spares
            analysis = analyse(message, self.cfg, facts, context.envelope.mail_from)
        hits = list(analysis.hits)
        bayes, listed, why = await self._look_up(analysis, context)
        if bayes is not None:
            hits.append(bayes)
        if listed == "allow" and forged(facts):
            hits.append(("ALLOW_FORGED", 0.0))
            listed, why = "", ""
        elif listed == "block":
            hits.append(("BLOCKLISTED", self.cfg.tag_score))
        elif listed == "allow":
            hits.append(("CORRESPONDENT" if why == "correspondent" else "ALLOWLISTED", 0.0))
        score = round(sum(points for _, points in hits), 2)
        gtube = any(points >= GTUBE_SCORE for _, points in hits)
        return Judgement(score, tuple(name for name, _ in hits), gtube, listed, why)

    async def scan(self, message: MessageData, context: ScanContext) -> FilterResult:
        j = await self.classify(message, context)
        if j.gtube:
            return FilterResult(Action.REJECT, j.score, j.symbols, "spam (GTUBE)",
                                reason="GTUBE test message")
        if context.direction is Direction.OUTBOUND:
            if j.score >= self.cfg.outbound_reject_score:
                return FilterResult(Action.REJECT, j.score, j.symbols, "spam",
                                    reason=f"junk score {j.score:g}")
            return FilterResult(Action.ACCEPT, j.score, j.symbols, "clean")
        if j.listed == "allow":
            return FilterResult(Action.ACCEPT, j.score, j.symbols, f"allowed ({j.why})")
        if self.cfg.reject_score and j.score >= self.cfg.reject_score:
            return FilterResult(Action.REJECT, j.score, j.symbols, "spam",
                                reason=f"junk score {j.score:g}")
        if j.score >= self.cfg.tag_score:
            status = f"spam ({j.why})" if j.listed == "block" else "spam"
            return FilterResult(Action.TAG, j.score, j.symbols, status,
                                mailbox=self.cfg.mailbox)
        return FilterResult(Action.ACCEPT, j.score, j.symbols, "clean")
