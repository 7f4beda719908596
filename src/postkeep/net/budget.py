"""A process-wide budget of octets that sessions hold in memory on behalf of their clients.

One `DataBudget` counts message text in flight for the SMTP sessions of a process
(`smtp.max_data_in_flight`, `smtp.intake`), another the literal octets the IMAP sessions of a
process hold for their commands (`imap.max_append_in_flight`, `imap.server`: APPEND and
MULTIAPPEND messages above all). A session takes octets before it holds them and gives them
back when it lets them go, however its command or connection ends; what does not fit is refused
by the protocol's own "try again later" (SMTP ``451 4.3.1``, IMAP ``NO [LIMIT]``).
"""

from __future__ import annotations


class DataBudget:
    """Octets held in memory by the sessions of this process, and the most they may hold.
    Used from the event loop's thread only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def room(self) -> int:
        return self.limit - self.used

    def take(self, octets: int) -> bool:
        """Count `octets` more, if they fit."""
        if octets > self.room:
            return False
        self.used += octets
        return True

    def give(self, octets: int) -> None:
        self.used -= octets
