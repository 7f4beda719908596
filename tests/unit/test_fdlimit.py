"""The open-file limit the connection caps need (`postkeep.server.fdlimit`)."""

from __future__ import annotations

import dataclasses

import pytest

from postkeep.config import Config, ImapConfig, ServerConfig, SmtpConfig, SubmissionConfig
from postkeep.server.fdlimit import FD_MARGIN, FD_PER_WORKER, choose_soft_limit, fd_need


def test_soft_limit_kept_raised_or_refused() -> None:
    assert choose_soft_limit(1000, 4096, 8192) == 4096  # enough already: never lowered
    assert choose_soft_limit(5000, 1024, 8192) == 5000  # raised to the need
    assert choose_soft_limit(5000, 1024, 5000) == 5000
    assert choose_soft_limit(5000, 1024, 4999) is None  # even the hard limit is too low
    assert choose_soft_limit(5000, 1024, -1) == 5000  # RLIM_INFINITY
    assert choose_soft_limit(5000, -1, -1) == -1


def _cfg(processes: int, submission: bool = True) -> Config:
    return dataclasses.replace(
        Config(),
        server=ServerConfig(processes=processes),
        smtp=SmtpConfig(max_connections=300),
        submission=SubmissionConfig(tls_listen=["127.0.0.1:465"] if submission else []),
        imap=ImapConfig(tls_listen=["127.0.0.1:993"], max_connections=5000),
    )


def test_need_counts_every_role_a_worker_may_serve() -> None:
    need = fd_need(_cfg(processes=1))
    assert need.total == 300 + 300 + 5000 + FD_PER_WORKER + FD_MARGIN
    assert need.keys == ("smtp.max_connections", "smtp.max_connections (submission)",
                         "imap.max_connections", "server.processes")
    assert fd_need(_cfg(processes=1, submission=False)).total == (
        300 + 5000 + FD_PER_WORKER + FD_MARGIN
    )


def test_every_worker_may_hold_all_connections_and_the_main_process_their_channels() -> None:
    assert fd_need(_cfg(processes=4)).total == 300 + 300 + 5000 + FD_PER_WORKER * 4 + FD_MARGIN


@pytest.mark.parametrize("processes", [0, 1, 3])
def test_need_is_positive_with_defaults(processes: int) -> None:
    cfg = dataclasses.replace(Config(), server=ServerConfig(processes=processes))
    assert fd_need(cfg).total > FD_MARGIN
