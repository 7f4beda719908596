"""ARC sealing (RFC 8617 §5.1): the ARC Set of instance N+1 a sealer adds to a message.

`ArcSealer.seal(header_block, body_hash, results, cv)` gives three fields to prepend, the
ARC-Seal first:

- ARC-Authentication-Results (§4.1.1): ``i=N+1;`` and the sealer's own Authentication-Results
  value (`authres.render`), the chain's status among its results as ``arc=``;
- ARC-Message-Signature (§4.1.2, §5.1.1): a DKIM signature (RFC 6376 §3.7, relaxed/relaxed)
  without v=, i= the instance, over the fields of `dkim.sign.DEFAULT_HEADERS` the message
  has (each instance, bottom up), and the body hash given;
- ARC-Seal (§4.1.3, §5.1.2): cv= the status of the chain as it came (none: no ARC Set;
  pass; fail), its signature over the ARC Sets 1 to N+1, oldest first, AAR, AMS, AS within
  each, relaxed, the new AS with an empty b= and no final CRLF. With cv=fail only the new set
  is covered (the chain it would vouch for is broken).

No set is added (`seal` gives b"") when the chain already has 50 instances (§4.2.1) or its
newest AS says cv=fail (§5.1.2: the chain has ended). Signing is rsa-sha256 or
ed25519-sha256 (`dkim.sign.sign_data`); RFC 8617 names rsa-sha256, which every verifier has.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Sequence

from postkeep.mailauth import authres
from postkeep.mailauth.arc.headers import (
    MAX_INSTANCES,
    ArcStructureError,
    collect,
    highest_instance,
    parse_seal,
)
from postkeep.mailauth.dkim.canon import (
    HeaderField,
    canon_header,
    canonical_fields,
    parse_header_fields,
)
from postkeep.mailauth.dkim.keys import SigningKey, key_type
from postkeep.mailauth.dkim.sign import DEFAULT_HEADERS, DkimSigner, fold, fold_value, sign_data

CHAIN_STATUSES = ("none", "pass", "fail")


class ArcSealer:
    """Seals for one domain (d=) and selector with one key, as `authserv_id` (the AAR's)."""

    def __init__(self, domain: str, selector: str, key: SigningKey, authserv_id: str, *,
                 headers: Iterable[str] = DEFAULT_HEADERS,
                 clock: Callable[[], float] = time.time) -> None:
        # DkimSigner checks the names, the key and the header list as DKIM needs them.
        checked = DkimSigner(domain, selector, key, headers=headers)
        self.domain = checked.domain
        self.selector = selector
        self.key = key
        self.algorithm = f"{key_type(key)}-sha256"
        self.authserv_id = authserv_id
        self.headers = tuple(h for h in checked.headers if not h.startswith("arc-")
                             and h != "authentication-results")
        self._keys = [name.encode("ascii") for name in self.headers]
        self._clock = clock

    def seal(self, header_block: bytes, body_hash: bytes, results: Sequence[str],
             cv: str) -> bytes:
        """The new ARC Set (AS, AMS, AAR, each CRLF-terminated) for a message whose header
        block is `header_block` and whose relaxed body hash is `body_hash`; `results` the
        resinfos of the sealer's Authentication-Results (its ``arc=`` among them), `cv` the
        chain's status. b"" when no set may be added (module docstring)."""
        if cv not in CHAIN_STATUSES:
            raise ValueError(f"cv must be one of {', '.join(CHAIN_STATUSES)}")
        fields = parse_header_fields(header_block)
        existing = highest_instance(fields)
        if existing >= MAX_INSTANCES or _ended(fields, existing):
            return b""
        if existing == 0:
            cv = "none"  # §5.1.2: instance 1 says none (fields without an instance count not)
        elif cv == "none":
            raise ValueError(f"cv=none for a message with {existing} ARC Sets")
        instance = existing + 1
        aar = authres.render(self.authserv_id, results, instance=instance)
        now = int(self._clock())
        present = canonical_fields(header_block, self._keys, "relaxed")
        signed, hashed = [], []
        for name, instances in zip(self.headers, present.values(), strict=True):
            signed += [name] * len(instances)
            hashed += reversed(instances)
        prefix = [f"i={instance};", f"a={self.algorithm};", "c=relaxed/relaxed;",
                  f"d={self.domain};", f"s={self.selector};", f"t={now};"]
        h = [f"{name}:" for name in signed]
        h[0], h[-1] = "h=" + h[0], h[-1][:-1] + ";"
        ams = self._field("ARC-Message-Signature:", prefix + h + [
            f"bh={base64.b64encode(body_hash).decode('ascii')};", "b="], hashed)
        sets: list[bytes] = []
        if cv == "pass":
            try:
                for s in collect(fields):
                    sets += [canon_header(raw, "relaxed")
                             for raw in (s.aar_raw, s.ams_raw, s.seal_raw)]
            except ArcStructureError as e:
                raise ValueError(f"cv=pass for a chain that is broken: {e}") from None
        sets += [canon_header(aar, "relaxed"), canon_header(ams, "relaxed")]
        seal = self._field("ARC-Seal:", [
            f"i={instance};", f"a={self.algorithm};", f"t={now};", f"cv={cv};",
            f"d={self.domain};", f"s={self.selector};", "b="], sets)
        return seal + ams + aar

    def _field(self, name: str, pieces: list[str], hashed: list[bytes]) -> bytes:
        """The field `name` with tags `pieces` (b= last, empty), signed over `hashed` and
        the field itself (relaxed, no final CRLF), b= then filled in and folded."""
        lines = fold([name], pieces)
        unsigned = "\r\n".join(lines).encode("ascii")
        data = b"".join(hashed) + canon_header(unsigned, "relaxed").removesuffix(b"\r\n")
        signature = base64.b64encode(sign_data(self.key, data)).decode("ascii")
        return ("\r\n".join(fold_value(lines, signature)) + "\r\n").encode("ascii")


def _ended(fields: Sequence[HeaderField], top: int) -> bool:
    """Whether an ARC-Seal of instance `top` (the newest) says cv=fail."""
    for f in fields:
        if f.key == "arc-seal":
            try:
                seal = parse_seal(f.raw)
            except ArcStructureError:
                continue
            if seal.instance == top and seal.cv == "fail":
                return True
    return False
