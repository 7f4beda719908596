"""Literals a regular expression's every match contains, to pass a text by cheaply.

Python's `re` tries every alternative of a pattern like ``\\b(?:next of kin|beneficiary|...)``
at every position of the text: for the junk filter's phrase families that is most of its
time on ordinary mail, in which none of them occurs. A few substring tests (``in``, a fast
search in C) on the literals one of which any match must contain tell that first, or for
many sets of them at once `Needles`: one pass of an Aho-Corasick automaton (pyahocorasick)
over the text.
`required_literals` finds them in the patterns the junk rules are written in (literals,
groups, classes, escapes and bounded repeats, nothing else); the tests check it against
strings generated from every family's pattern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ahocorasick


class Needles:
    """Named sets of literals, and which of them occur in a text (a set without literals:
    always, nothing being known)."""

    def __init__(self, sets: Mapping[str, Sequence[str]]) -> None:
        self.always = frozenset(name for name, literals in sets.items() if not literals)
        owners: dict[str, set[str]] = {}
        for name, literals in sets.items():
            for literal in literals:
                owners.setdefault(literal, set()).add(name)
        self._automaton = ahocorasick.Automaton()
        for literal, names in owners.items():
            self._automaton.add_word(literal, frozenset(names))
        self._automaton.make_automaton()

    def present(self, text: str) -> frozenset[str]:
        """The names of the sets one of whose literals is in `text`."""
        if not self._automaton:
            return self.always
        found = set(self.always)
        for _, names in self._automaton.iter(text):
            found |= names
        return frozenset(found)


def anywhere(needles: Sequence[str], text: str) -> bool:
    """Whether one of `needles` is in `text` (True without needles: nothing is known)."""
    return not needles or any(needle in text for needle in needles)


_QUANTIFIERS = "?*{"
_RUN_ENDS = "()[]\\.^$|+?*{"


def _top_level(pattern: str, stop: str) -> list[str]:
    """`pattern` split at its characters in `stop` outside groups, classes and escapes."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif c == "[":
            i = pattern.index("]", i + 2)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and c in stop:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*parts, pattern[start:]]


def _group_end(pattern: str, at: int) -> int:
    """The index of the ")" closing the group opened at `at`."""
    depth, i = 0, at
    while True:
        c = pattern[i]
        if c == "\\":
            i += 1
        elif c == "[":
            i = pattern.index("]", i + 2)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1


def required_literals(pattern: str) -> tuple[str, ...]:
    """Literals one of which every match of `pattern` contains, or () when none is certain.

    For the patterns of this module (literals, groups, classes, escapes and bounded repeats:
    nothing else): each branch of a top-level ``|`` must give some; a branch gives its longest
    literal run outside groups and classes (a character a quantifier makes optional, ``s?``,
    ends the run without it), or, where that is shorter, what a group it cannot do without
    (not followed by ``?``, ``*`` or ``{0``; not a lookaround) requires, whichever set's
    shortest literal is longest."""
    found: list[str] = []
    for branch in _top_level(pattern, "|"):
        best = _branch_literals(branch)
        if not best:
            return ()
        found += best
    return tuple(dict.fromkeys(found))


def _branch_literals(branch: str) -> tuple[str, ...]:
    options: list[tuple[str, ...]] = []
    run, i = "", 0
    while i < len(branch):
        c = branch[i]
        if c == "(":
            end = _group_end(branch, i)
            after = branch[end + 1 : end + 3]
            inner = branch[i + 1 : end]
            optional = after[:1] in ("?", "*") or after == "{0"
            if inner.startswith("?:") and not optional:
                options.append(required_literals(inner[2:]))
            options.append((run,))
            run, i = "", end + 1
            continue
        if c in _QUANTIFIERS:  # the character before is optional
            run = run[:-1]
            if c == "{":
                i = branch.index("}", i)
        elif c == "[":
            i = branch.index("]", i + 2)
        elif c == "\\":
            i += 1
            if not branch[i].isalnum():  # an escaped punctuation character: itself
                run += branch[i]
                i += 1
                continue
        elif c not in _RUN_ENDS:
            run += c
            i += 1
            continue
        options.append((run,))
        run = ""
        i += 1
    options.append((run,))
    usable = [o for o in options if o and all(x.strip() for x in o)]
    return max(usable, key=lambda o: min(len(x) for x in o), default=())
