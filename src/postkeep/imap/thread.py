"""SORT and THREAD (RFC 5256), with the DISPLAYFROM/DISPLAYTO sort keys of RFC 5957.

`sort_fields` extracts, once per message, everything SORT and THREAD look at; `sort`,
`thread_orderedsubject` and `thread_references` then work on (id, `SortFields`) pairs, where
the id is whatever the response names (sequence number or UID; ties are broken by it, so it must
grow with the sequence number). `render_threads` writes the THREAD response payload (RFC 5256
§4).

A thread is a `Thread` node: a message id, or None for a dummy (a message that is not there,
RFC 5256 §2.2), with its children. Every algorithm here walks trees with explicit stacks, since
reference chains can be arbitrarily deep.

String keys are compared as Dovecot (the reference of the imaptest conformance suite) compares
them: mapped by i;unicode-casemap (RFC 5051: titlecase, then NFKD), which on ASCII is the
i;ascii-casemap collation of RFC 5256 §3 (letters upper-cased, so "[" and "_" sort after
"Z"), then compared code point by code point.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from postkeep.imap.content import Address, MessageContent, decode_header_text, parse_addresses
from postkeep.imap.wire.commands import SortCriterion


@dataclass(frozen=True, slots=True)
class SortFields:
    """What SORT and THREAD need of one message (RFC 5256 §2-3, RFC 5957 §2).

    `date` is the sent date (Date: field, else the internal date) as POSIX time; `subject` the
    base subject (RFC 5256 §2.1) and `reply` whether extracting it removed a reply or forward
    marker; `from_`, `to`, `cc` the lower-cased mailbox (local part) of the field's first
    address; `display_from`, `display_to` its RFC 2047 decoded display name, else its
    addr-spec. When the first address is a group, both are the group name (as in Dovecot).
    `message_id`, `references` and `in_reply_to` are message ids without angle brackets ("" when
    absent).
    """

    date: float
    arrival: float
    size: int
    subject: str
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: str
    references: tuple[str, ...]
    in_reply_to: str
    reply: bool = False


@dataclass(frozen=True, slots=True)
class Thread:
    """A node of a thread tree: message `id`, or None for a dummy parent (RFC 5256 §2.2).

    Trees from this module only have dummies at the top level, each with two children or more.
    Equality and repr recurse, so avoid them on very deep trees.
    """

    id: int | None
    children: tuple[Thread, ...] = ()


# -- field extraction -----------------------------------------------------------------------

_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")
_MSG_ID: Final = re.compile(r"<([^<>]+)>")


def _starts(text: str, pos: int, end: int, word: str) -> bool:
    """Whether text[pos:end] starts with the ASCII `word`, ignoring ASCII case."""
    chunk = text[pos : pos + len(word)]
    return pos + len(word) <= end and chunk.isascii() and chunk.lower() == word


def _blob_end(text: str, pos: int, end: int) -> int | None:
    """Where the subj-blob at `pos` ("[" *BLOBCHAR "]" *WSP) ends, or None if none is there."""
    if pos >= end or text[pos] != "[":
        return None
    pos += 1
    while pos < end and text[pos] != "]":
        if text[pos] == "[":
            return None
        pos += 1
    if pos >= end:
        return None
    pos += 1
    while pos < end and text[pos] == " ":
        pos += 1
    return pos


def _leader_end(text: str, pos: int, end: int) -> tuple[int, bool]:
    """Skip one subj-leader at `pos`: WSP, or *subj-blob subj-refwd with subj-refwd =
    ("re" / ("fw" ["d"])) *WSP [subj-blob] ":". Returns (new position, whether a subj-refwd
    was removed)."""
    if pos < end and text[pos] == " ":
        pos += 1  # a single space (spaces are collapsed) is a leader on its own
    at = pos
    while at < end and text[at] == "[":
        blob = _blob_end(text, at, end)
        if blob is None:
            return pos, False
        at = blob
    for word in ("re", "fwd", "fw"):
        if _starts(text, at, end, word):
            at += len(word)
            break
    else:
        return pos, False
    if at < end and text[at] == " ":
        at += 1
    if at < end and text[at] == "[":
        blob = _blob_end(text, at, end)
        if blob is None:
            return pos, False
        at = blob
    if at < end and text[at] == ":":
        return at + 1, True
    return pos, False


def _extract_base_subject(subject: str) -> tuple[str, bool]:
    """The base subject of RFC 5256 §2.1 and whether the message is a reply or forward (a
    subj-refwd, a "(fwd)" trailer or a subj-fwd-hdr/trl pair was removed)."""
    # (1) Decode encoded-words (after unfolding), tabs and continuations to one space.
    text = _WHITESPACE.sub(" ", decode_header_text(subject.replace("\r\n", "")))
    start, end, reply = 0, len(text), False
    while True:
        # (2) Remove trailing subj-trailer ("(fwd)" / WSP) repeatedly.
        while end > start:
            if text[end - 1] == " ":
                end -= 1
            elif end - 5 >= start and _starts(text, end - 5, end, "(fwd)"):
                end -= 5
                reply = True
            else:
                break
        found = True
        while found:  # (5) Repeat (3) and (4) until nothing is removed.
            # (3) Remove subj-leaders.
            new_start, refwd = _leader_end(text, start, end)
            found = new_start != start
            reply = reply or refwd
            start = new_start
            # (4) Remove a subj-blob if a non-empty subj-base remains.
            blob = _blob_end(text, start, end)
            if blob is not None and blob < end:
                start = blob
                found = True
        # (6) "[fwd:" subject "]": remove the wrapper and repeat from (2).
        if end - start >= 6 and _starts(text, start, end, "[fwd:") and text[end - 1] == "]":
            start += 5
            end -= 1
            reply = True
            continue
        return text[start:end], reply  # (7)


def base_subject(subject: str) -> str:
    """The base subject (RFC 5256 §2.1) of a Subject: field value, RFC 2047 encoded or not."""
    return _extract_base_subject(subject)[0]


def _first_address(content: MessageContent, name: str) -> Address | None:
    """The first entry of the first `name` field's address list (a group start for a group)."""
    values = content.raw_header_values(name)
    addresses = parse_addresses(values[0]) if values else []
    return addresses[0] if addresses else None


def _mailbox(addr: Address | None) -> str:
    """addr-mailbox (the local part) of `addr`, lower-cased (RFC 5256 §3); a group's name."""
    return "" if addr is None or addr.mailbox is None else addr.mailbox.lower()


def _display(addr: Address | None) -> str:
    """RFC 5957 §2: the decoded display name of `addr`, else its addr-spec; a group's name."""
    if addr is None:
        return ""
    if addr.name is not None:
        display = decode_header_text(addr.name)
        if display:
            return display
    if addr.mailbox is not None and addr.domain:
        return f"{addr.mailbox}@{addr.domain}"
    return addr.mailbox or ""


def _msg_ids(value: str) -> list[str]:
    """The msg-ids in `value`, without angle brackets, quotes and white space."""
    ids = (re.sub(r'[\s"]', "", m) for m in _MSG_ID.findall(value))
    return [i for i in ids if i]


def sort_fields(data: bytes, internaldate: float, size: int) -> SortFields:
    """SortFields of the message `data` (only its header is read)."""
    content = MessageContent.parse(data)

    def first(name: str) -> str:
        values = content.raw_header_values(name)
        return values[0] if values else ""

    subject, reply = _extract_base_subject(first("Subject"))
    sent = content.sent_time()
    from_addr = _first_address(content, "From")
    to_addr = _first_address(content, "To")
    message_ids = _msg_ids(first("Message-ID"))
    in_reply_to = _msg_ids(first("In-Reply-To"))
    return SortFields(
        date=internaldate if sent is None else sent,
        arrival=internaldate,
        size=size,
        subject=subject,
        from_=_mailbox(from_addr),
        to=_mailbox(to_addr),
        cc=_mailbox(_first_address(content, "Cc")),
        display_from=_display(from_addr),
        display_to=_display(to_addr),
        message_id=message_ids[0] if message_ids else "",
        references=tuple(_msg_ids(" ".join(content.raw_header_values("References")))),
        in_reply_to=in_reply_to[0] if in_reply_to else "",
        reply=reply,
    )


# -- SORT -----------------------------------------------------------------------------------


def _casemap(text: str) -> str:
    """`text` mapped by i;unicode-casemap (RFC 5051 §2): each character titlecased (its simple
    mapping: characters whose titlecase is several characters stay), then NFKD. On ASCII this
    is i;ascii-casemap (RFC 4790 §9.2), which RFC 5256 §3 names: letters upper-cased."""
    if text.isascii():
        return text.upper()
    titled = "".join(t if len(t := ch.title()) == 1 else ch for ch in text)
    return unicodedata.normalize("NFKD", titled)


_SORT_KEYS: Final[dict[str, Callable[[SortFields], float | int | str]]] = {
    "ARRIVAL": lambda f: f.arrival,
    "CC": lambda f: _casemap(f.cc),
    "DATE": lambda f: f.date,
    "FROM": lambda f: _casemap(f.from_),
    "SIZE": lambda f: f.size,
    "SUBJECT": lambda f: _casemap(f.subject),
    "TO": lambda f: _casemap(f.to),
    "DISPLAYFROM": lambda f: _casemap(f.display_from),  # RFC 5957 §2
    "DISPLAYTO": lambda f: _casemap(f.display_to),
}


def sort(items: Sequence[tuple[int, SortFields]], criteria: Sequence[SortCriterion]) -> list[int]:
    """The ids of `items` ordered by `criteria` (RFC 5256 §3): each key ascending, or
    descending when REVERSE; messages equal on every key stay in id order."""
    order = sorted(items, key=lambda item: item[0])
    for criterion in reversed(criteria):  # stable sorts, least significant key first
        get = _SORT_KEYS[criterion.key]
        order.sort(key=lambda item: get(item[1]), reverse=criterion.reverse)
    return [ident for ident, _ in order]


# -- THREAD=ORDEREDSUBJECT ------------------------------------------------------------------


def thread_orderedsubject(items: Sequence[tuple[int, SortFields]]) -> list[Thread]:
    """THREAD=ORDEREDSUBJECT (RFC 5256 §2.1): one thread per base subject, its first message
    (by sent date) on top with the others as its children in date order; threads ordered by
    the date of their first message."""
    groups: dict[str, list[tuple[float, int]]] = {}
    for ident, fields in items:
        groups.setdefault(_casemap(fields.subject), []).append((fields.date, ident))
    threads: list[tuple[tuple[float, int], Thread]] = []
    for members in groups.values():
        members.sort()
        children = tuple(Thread(ident) for _, ident in members[1:])
        threads.append((members[0], Thread(members[0][1], children)))
    threads.sort(key=lambda thread: thread[0])
    return [thread for _, thread in threads]


# -- THREAD=REFERENCES ----------------------------------------------------------------------


class _Container:
    """A message, or a dummy (`fields` None), in the REFERENCES tree (RFC 5256 §2.2)."""

    __slots__ = ("children", "fields", "id", "parent")

    def __init__(self, ident: int | None = None, fields: SortFields | None = None) -> None:
        self.id = ident
        self.fields = fields
        self.parent: _Container | None = None
        self.children: list[_Container] = []


def _would_loop(parent: _Container, child: _Container) -> bool:
    """Whether making `parent` the parent of `child` closes a loop (`parent` is `child` or
    one of its descendants)."""
    node: _Container | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def _link(parent: _Container, child: _Container) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _date_key(node: _Container) -> tuple[float, int]:
    """Sent date then id; a dummy sorts as its first child (RFC 5256 §2.2 steps 4, 6)."""
    while node.fields is None:
        node = node.children[0]
    assert node.id is not None
    return node.fields.date, node.id


def _subject_key(node: _Container) -> str:
    """The thread subject (RFC 5256 §2.2 step 5.B.1): the base subject of the message, or of
    a dummy's first child."""
    fields = node.fields if node.fields is not None else node.children[0].fields
    return _casemap(fields.subject) if fields is not None else ""


def _build_containers(items: Sequence[tuple[int, SortFields]]) -> list[_Container]:
    """RFC 5256 §2.2 step 1 (link messages by References/In-Reply-To) and step 2 (the messages
    without a parent). Returns the top-level containers."""
    table: dict[str, _Container] = {}
    every: list[_Container] = []

    def lookup(message_id: str) -> _Container:
        found = table.get(message_id)
        if found is None:  # (1.A) a dummy for a message id not seen (yet)
            found = table[message_id] = _Container()
            every.append(found)
        return found

    for ident, fields in sorted(items, key=lambda item: item[0]):
        node = table.get(fields.message_id) if fields.message_id else None
        if node is not None and node.fields is None:
            node.id, node.fields = ident, fields  # a dummy until now
        else:  # no id, or a duplicate: a unique one (only the first message keeps the id)
            node = _Container(ident, fields)
            every.append(node)
            if fields.message_id:
                table[fields.message_id] = node
        refs = fields.references or ((fields.in_reply_to,) if fields.in_reply_to else ())
        # (1.A) Chain the references, each the parent of the next, keeping existing parents.
        previous: _Container | None = None
        for ref in refs:
            current = lookup(ref)
            if (
                previous is not None
                and current.parent is None
                and not _would_loop(previous, current)
            ):
                _link(previous, current)
            previous = current
        # (1.B) The last reference becomes the parent, replacing any parent set by 1.A.
        _unlink(node)
        if previous is not None and not _would_loop(previous, node):
            _link(previous, node)
    return [node for node in every if node.parent is None]  # (2)


def _prune_level(nodes: Iterable[_Container], at_root: bool) -> list[_Container]:
    """RFC 5256 §2.2 step 3 on one set of siblings: drop childless dummies, splice in the
    children of the others, except a dummy with several children at the top level."""
    kept: list[_Container] = []
    queue = deque(nodes)
    while queue:
        node = queue.popleft()
        if node.fields is None:
            if not node.children:
                continue
            if not at_root or len(node.children) == 1:
                queue.extendleft(reversed(node.children))
                continue
        kept.append(node)
    return kept


def _preorder(roots: Iterable[_Container]) -> list[_Container]:
    """Every container under `roots`, each before its descendants."""
    order: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _prune(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 §2.2 step 3 over the whole forest, bottom-up, so that whether a top-level
    dummy keeps several children is decided once its own dummy descendants are pruned."""
    for node in reversed(_preorder(roots)):
        node.children = _prune_level(node.children, False)
    return _prune_level(roots, True)


def _group_by_subject(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 §2.2 step 5: merge top-level threads with the same base subject."""
    table: dict[str, _Container] = {}
    for node in roots:  # (5.B) one message per thread subject
        subject = _subject_key(node)
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (
            held.fields is not None
            and (node.fields is None or (held.fields.reply and not node.fields.reply))
        ):
            table[subject] = node
    gone: set[_Container] = set()  # merged under another top-level node
    replaced: dict[_Container, _Container] = {}  # moved under a new dummy that takes its place
    for node in roots:  # (5.C) merge
        if node in gone or node in replaced:
            continue
        subject = _subject_key(node)
        if not subject:
            continue
        held = table[subject]
        if held is node:
            continue
        gone.add(node)
        if held.fields is None and node.fields is None:
            held.children.extend(node.children)
        elif held.fields is None or (
            node.fields is not None and node.fields.reply and not held.fields.reply
        ):
            held.children.append(node)
        else:
            dummy = _Container()
            dummy.children = [held, node]
            replaced[held] = table[subject] = dummy
    return [replaced.get(node, node) for node in roots if node not in gone]


def _sort_and_freeze(roots: list[_Container]) -> list[Thread]:
    """RFC 5256 §2.2 step 6: sort every set of siblings by sent date, deepest first; then the
    tree as `Thread` nodes."""
    frozen: dict[_Container, Thread] = {}
    for node in reversed(_preorder(roots)):  # children before their parents
        node.children.sort(key=_date_key)
        frozen[node] = Thread(node.id, tuple(frozen.pop(child) for child in node.children))
    roots.sort(key=_date_key)
    return [frozen[node] for node in roots]


def thread_references(items: Sequence[tuple[int, SortFields]]) -> list[Thread]:
    """THREAD=REFERENCES (RFC 5256 §2.2): steps 1-2 link messages by References and
    In-Reply-To, 3 prunes dummies, 4 sorts the top level by sent date, 5 merges top-level
    threads by base subject, 6 sorts every level by sent date."""
    roots = _prune(_build_containers(items))
    for node in roots:  # (4) a dummy sorts as its earliest child
        if node.fields is None:
            node.children.sort(key=_date_key)
    roots.sort(key=_date_key)
    return _sort_and_freeze(_group_by_subject(roots))


# -- the THREAD response --------------------------------------------------------------------


def render_threads(threads: Iterable[Thread]) -> str:
    """The THREAD response payload (RFC 5256 §4), e.g. "(2)(3 6 (4 23)(44 7 96))".

    A message with one child continues its thread-members list; several children become
    nested thread lists; a dummy contributes no number (its single child, if only one,
    takes its place).
    """
    out: list[str] = []
    work: list[Thread | str] = []
    for thread in reversed(list(threads)):
        work += [")", thread, "("]
    while work:
        item = work.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        numbers: list[str] = []
        node = item
        while True:
            if node.id is not None:
                numbers.append(str(node.id))
            if len(node.children) != 1:
                break
            node = node.children[0]
        out.append(" ".join(numbers))
        if numbers and node.children:
            out.append(" ")
        for child in reversed(node.children):
            work += [")", child, "("]
    return "".join(out)
