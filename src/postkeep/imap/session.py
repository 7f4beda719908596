"""Where the driver finds the IMAP session: the code is in `postkeep.imap.messages` for one
commit, so that history follows it there before `Session` is split by command family."""

from postkeep.imap.messages import Output, Session, SessionLimits

__all__ = ["Output", "Session", "SessionLimits"]
