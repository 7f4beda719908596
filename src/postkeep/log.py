"""Logging: one named logger per subsystem, UTC timestamps, one line per event.

Each SMTP connection gets one line when it ends (`disconnect ip=... messages=... reason=...`;
the `connect` line is at debug level), each message one line (`message qid=...`).
Rejections are logged as one line with the client IP, the reason and the enhanced status code,
e.g. `smtp: reject ip=192.0.2.1 cmd=RCPT code=550 5.1.1 reason="user unknown: x@example.test"`.
"""

from __future__ import annotations

import logging
import sys
import time


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = self.converter(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def setup(level: str = "info", process: str = "") -> None:
    """Log to stderr; `process` tags the lines of a worker process (`postkeep.imap[w1]: ...`)."""
    # Records need no caller, thread or process lookups: each costs time on every log line.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    tag = f"[{process}]" if process else ""
    handler.setFormatter(
        _UtcFormatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
    )
    root = logging.getLogger("postkeep")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"postkeep.{name}")


def quote(value: object) -> str:
    """A log field value, quoted if it has spaces or quotes; control characters escaped."""
    text = str(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text
