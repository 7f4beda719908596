"""A resumable MD5 (RFC 1321): the compression function, with its chaining state exposed.

`hashlib` cannot export or resume an MD5 state, but the CRAM-MD5 secrets Dovecot stores (and
`sasl.secrets` derives) are exactly such states: the HMAC-MD5 (RFC 2104) inner and outer
contexts after compressing the one block `key XOR ipad` / `key XOR opad`. Verifying a CRAM-MD5
response (RFC 2195) resumes MD5 from them, so the password itself is never needed.

Only for that: pure Python, a few microseconds per 64-byte block, never used for bulk data.
"""

from __future__ import annotations

import struct

State = tuple[int, int, int, int]

BLOCK_SIZE = 64
IV: State = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)  # RFC 1321 §3.3

_MASK = 0xFFFFFFFF
# RFC 1321 §3.4: T[i] = floor(2**32 * abs(sin(i + 1))), and the per-step rotations
_T = (
    0xD76AA478, 0xE8C7B756, 0x242070DB, 0xC1BDCEEE, 0xF57C0FAF, 0x4787C62A, 0xA8304613, 0xFD469501,
    0x698098D8, 0x8B44F7AF, 0xFFFF5BB1, 0x895CD7BE, 0x6B901122, 0xFD987193, 0xA679438E, 0x49B40821,
    0xF61E2562, 0xC040B340, 0x265E5A51, 0xE9B6C7AA, 0xD62F105D, 0x02441453, 0xD8A1E681, 0xE7D3FBC8,
    0x21E1CDE6, 0xC33707D6, 0xF4D50D87, 0x455A14ED, 0xA9E3E905, 0xFCEFA3F8, 0x676F02D9, 0x8D2A4C8A,
    0xFFFA3942, 0x8771F681, 0x6D9D6122, 0xFDE5380C, 0xA4BEEA44, 0x4BDECFA9, 0xF6BB4B60, 0xBEBFBC70,
    0x289B7EC6, 0xEAA127FA, 0xD4EF3085, 0x04881D05, 0xD9D4D039, 0xE6DB99E5, 0x1FA27CF8, 0xC4AC5665,
    0xF4292244, 0x432AFF97, 0xAB9423A7, 0xFC93A039, 0x655B59C3, 0x8F0CCC92, 0xFFEFF47D, 0x85845DD1,
    0x6FA87E4F, 0xFE2CE6E0, 0xA3014314, 0x4E0811A1, 0xF7537E82, 0xBD3AF235, 0x2AD7D2BB, 0xEB86D391,
)
_S = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_WORDS = struct.Struct("<16I")
_STATE = struct.Struct("<4I")


def compress(state: State, block: bytes) -> State:
    """Process one 64-byte block (RFC 1321 §3.4); returns the new chaining state."""
    if len(block) != BLOCK_SIZE:
        raise ValueError("an MD5 block is 64 bytes")
    x = _WORDS.unpack(block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
            g = i
        elif i < 32:
            f = (d & b) | (~d & c)
            g = (5 * i + 1) % 16
        elif i < 48:
            f = b ^ c ^ d
            g = (3 * i + 5) % 16
        else:
            f = c ^ (b | (~d & _MASK))
            g = (7 * i) % 16
        f = (f + a + _T[i] + x[g]) & _MASK
        s = _S[i]
        a, d, c = d, c, b
        b = (b + ((f << s) | (f >> (32 - s)))) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def resume(state: State, data: bytes, done: int = BLOCK_SIZE) -> bytes:
    """Finish an MD5 whose first `done` bytes (a multiple of 64) gave `state`; the digest.

    Appends `data`, then the padding and the bit length of the whole message (RFC 1321 §3.1,
    §3.2, §3.5). `resume(IV, m, 0)` is MD5(m).
    """
    if done < 0 or done % BLOCK_SIZE:
        raise ValueError("the processed length must be a multiple of 64")
    total = done + len(data)
    tail = data + b"\x80" + b"\x00" * ((55 - total) % BLOCK_SIZE)
    tail += struct.pack("<Q", (total * 8) & 0xFFFFFFFFFFFFFFFF)
    for i in range(0, len(tail), BLOCK_SIZE):
        state = compress(state, tail[i : i + BLOCK_SIZE])
    return pack_state(state)


def md5(data: bytes) -> bytes:
    """MD5(data) from scratch (for tests; use hashlib elsewhere)."""
    return resume(IV, data, 0)


def pack_state(state: State) -> bytes:
    """The 16-byte little-endian form of a chaining state (also an MD5 digest's form)."""
    return _STATE.pack(*state)


def unpack_state(raw: bytes) -> State:
    """The chaining state packed by `pack_state` (ValueError unless 16 bytes)."""
    if len(raw) != 16:
        raise ValueError("an MD5 state is 16 bytes")
    a, b, c, d = _STATE.unpack(raw)
    return (a, b, c, d)
