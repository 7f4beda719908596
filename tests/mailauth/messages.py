"""Messages the signatures are checked on: each a corner of canonicalisation or h=."""

from __future__ import annotations

HEAD = (b"From: Alice <alice@example.test>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        b"Subject: Lunch\r\n"
        b"Date: Tue, 02 Dec 2025 12:00:00 +0000\r\n"
        b"Message-ID: <1@example.test>\r\n")

MESSAGES: dict[str, bytes] = {
    "plain": HEAD + b"\r\nShall we meet at noon?\r\n",
    "folded": (b"From: Alice\r\n <alice@example.test>\r\n"
               b"To: bob@example.org,\r\n\tcarol@example.org,  \r\n  dave@example.org\r\n"
               b"Subject:   a subject\r\n that is   folded\t\r\n"
               b"X-Unsigned: not in h=\r\n"
               b"MIME-Version: 1.0\r\n"
               b"\r\nbody\r\n"),
    "utf8": (b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
             b"To: ren\xc3\xa9@example.org\r\n"
             b"Subject: Gr\xc3\xbc\xc3\x9fe \xf0\x9f\x98\x80\r\n"
             b"MIME-Version: 1.0\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n"
             b"\r\nSch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\r\n"),
    "empty-body": HEAD + b"\r\n",
    "no-body": HEAD,
    "long-lines": HEAD + b"\r\n" + (b"x" * 996 + b"\r\n") * 3 + (b"word \t " * 150 + b"\r\n"),
    "multiple-to": (b"From: alice@example.test\r\n"
                    b"To: bob@example.org\r\n"
                    b"Subject: two To fields\r\n"
                    b"To: carol@example.org\r\n"
                    b"Cc: dave@example.org\r\n"
                    b"\r\nhello\r\n"),
    "whitespace": (HEAD + b"\r\n  leading\r\ntrailing \t \r\n\t\r\nin  \t the middle\r\n"
                   b"\r\n \r\n\r\n"),
    "large": HEAD + b"\r\n" + b"".join(b"line %06d of a larger body, with  two spaces\r\n" % i
                                       for i in range(2500)),
}
