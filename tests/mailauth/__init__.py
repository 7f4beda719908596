"""DKIM (postkeep.mailauth): canonicalisation, keys, signatures checked by dkimpy and
OpenDKIM over real DNS, and the verifier checked on theirs, on the RFC 8463 example and on
what must not pass."""
