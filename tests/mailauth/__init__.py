"""DKIM signing (postkeep.mailauth): canonicalisation, keys, and signatures checked by
dkimpy and OpenDKIM over real DNS."""
