"""The example of RFC 6376 Appendix A.2 (the signed message, rsa-sha256, simple/simple) and
its key, Appendix C (1024-bit RSA, `brisbane._domainkey.example.com`), typed in from the RFC's
text, continuation lines indented by six spaces as printed. As printed the body has two
spaces in "game.  Are"; the signature was made over one: erratum 3192 (www.rfc-editor.org/
errata/eid3192). `BODY_AS_PRINTED` keeps the two, and its body hash does not match.
"""

from __future__ import annotations

DOMAIN = "example.com"
RECORD = ("v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkM"
          "oGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/R"
          "tdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToI"
          "MmPSPDdQPNUYckcQ2QIDAQAB")
RECORDS = {f"brisbane._domainkey.{DOMAIN}.": RECORD}

_LINES = [
    "DKIM-Signature: v=1; a=rsa-sha256; s=brisbane; d=example.com;",
    "      c=simple/simple; q=dns/txt; i=joe@football.example.com;",
    "      h=Received : From : To : Subject : Date : Message-ID;",
    "      bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;",
    "      b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB",
    "        4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHut",
    "        KVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV",
    "        4bmp/YzhwvcubU4=;",
    "Received: from client1.football.example.com  [192.0.2.1]",
    "      by submitserver.example.com with SUBMISSION;",
    "      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)",
    "From: Joe SixPack <joe@football.example.com>",
    "To: Suzie Q <suzie@shopping.example.net>",
    "Subject: Is dinner ready?",
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)",
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>",
    "",
    "Hi.",
    "",
    "We lost the game. Are you hungry yet?",  # erratum 3192: one space
    "",
    "Joe.",
    "",
]
MESSAGE = "\r\n".join(_LINES).encode("ascii")
BODY_AS_PRINTED = MESSAGE.replace(b"game. Are", b"game.  Are")
