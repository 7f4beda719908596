"""A message's MIME summary: computed once at delivery, stored sealed, read by IMAP FETCH.

The summary holds what FETCH ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] need without
re-parsing the message (RFC 9051 §6.4.5, §7.5.2): the rendered ENVELOPE, the rendered extensible
BODYSTRUCTURE and non-extensible BODY, and the part tree with byte offsets
(`postkeep.mime.structure`). It is a small JSON document; the store seals it under the
message's content key (`postkeep.store.sql.mailops`), so a database dump shows no subject or
address.
"""

from __future__ import annotations

import json
from functools import cached_property

from postkeep.mime.structure import (
    Part,
    bodystructure,
    envelope,
    from_json,
    parse_structure,
    to_json,
)

VERSION = 1


def summarize(data: bytes) -> bytes:
    """The summary document of the raw message `data`."""
    root = parse_structure(data)
    doc = {
        "v": VERSION,
        "env": envelope(data, root),
        "bs": bodystructure(root, extensible=True),
        "body": bodystructure(root, extensible=False),
        "tree": to_json(root),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Summary:
    """A decoded summary document; the part tree is rebuilt only when a section is fetched."""

    def __init__(self, raw: bytes) -> None:
        doc = json.loads(raw)
        if doc.get("v") != VERSION:
            raise ValueError(f"unknown summary version {doc.get('v')!r}")
        self.envelope: str = doc["env"]
        self.bodystructure: str = doc["bs"]
        self.body: str = doc["body"]
        self._tree: str = doc["tree"]

    @cached_property
    def tree(self) -> Part:
        return from_json(self._tree)
