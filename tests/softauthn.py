"""A software WebAuthn authenticator for tests: real ES256 keys (`cryptography`), real CBOR
(`cbor2`), the byte layouts of W3C WebAuthn Level 3 — §6.1 authenticator data (rpIdHash,
flags, signCount, attested credential data), §6.5 attestation objects in the "none" format
(§8.7), §6.3.3 assertion signatures over authenticatorData || SHA-256(clientDataJSON) — and
the browser's part, §5.8.1 clientDataJSON and the JSON encoding of the responses (§5.1.8
``toJSON()``), so that what the server verifies is what a browser and an authenticator send.

It signs whatever it is told to (another origin, another RP ID, a counter that goes back), for
the tests of refusals; it is not a mock of the library being tested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40  # §6.1 flags: user present, user verified, attested data
AAGUID = bytes(16)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        """RFC 9053 §7.1.1 EC2 key: kty 2, alg -7 (ES256), crv 1 (P-256), x, y."""
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})


class SoftAuthenticator:
    """Credentials made and used by `create` and `get` (a platform authenticator that does
    user verification and keeps discoverable credentials)."""

    def __init__(self, *, counts: bool = True) -> None:
        self.counts = counts  # False: signCount stays 0 (as synced passkeys do)
        self.credentials: dict[bytes, Credential] = {}

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin,
                           "crossOrigin": False}, separators=(",", ":")).encode()

    def create(self, options_json: str, origin: str, *, rp_id: str | None = None,
               challenge: str | None = None) -> str:
        """`navigator.credentials.create()`: the registration response as JSON."""
        options = json.loads(options_json)
        rp = rp_id or options["rp"]["id"]
        cred = Credential(os.urandom(32), ec.generate_private_key(ec.SECP256R1()), rp,
                          unb64url(options["user"]["id"]))
        public = cred.cose_public_key()
        auth_data = (hashlib.sha256(rp.encode()).digest() + bytes([UP | UV | AT])
                     + cred.sign_count.to_bytes(4, "big") + AAGUID
                     + len(cred.credential_id).to_bytes(2, "big") + cred.credential_id + public)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", challenge or options["challenge"],
                                        origin)
        self.credentials[cred.credential_id] = cred
        return json.dumps({
            "id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
            "type": "public-key", "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
            "response": {"clientDataJSON": b64url(client_data),
                         "attestationObject": b64url(attestation), "transports": ["internal"]},
        })

    def get(self, options_json: str, origin: str, *, rp_id: str | None = None,
            credential_id: bytes | None = None, sign_count: int | None = None,
            flags: int = UP | UV, user_handle: bool = True) -> str:
        """`navigator.credentials.get()`: the assertion response as JSON. The credential is
        `credential_id`, else the first allowed one, else the first for the RP."""
        options: dict[str, Any] = json.loads(options_json)
        rp = options["rpId"]
        if credential_id is None:
            allowed = [unb64url(c["id"]) for c in options.get("allowCredentials") or []]
            mine = [c for c in self.credentials.values()
                    if c.rp_id == rp and (not allowed or c.credential_id in allowed)]
            credential_id = mine[0].credential_id
        cred = self.credentials[credential_id]
        if sign_count is not None:
            cred.sign_count = sign_count
        elif self.counts:
            cred.sign_count += 1
        auth_data = (hashlib.sha256((rp_id or rp).encode()).digest() + bytes([flags])
                     + cred.sign_count.to_bytes(4, "big"))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        response: dict[str, Any] = {"clientDataJSON": b64url(client_data),
                                    "authenticatorData": b64url(auth_data),
                                    "signature": b64url(signature)}
        if user_handle:
            response["userHandle"] = b64url(cred.user_handle)
        return json.dumps({"id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
                           "type": "public-key", "clientExtensionResults": {},
                           "response": response})
