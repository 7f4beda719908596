"""Sending with mutt (GNU SASL) through both submission ports, with its default settings.

GNU SASL 2.2 binds SCRAM -PLUS only with tls-exporter (RFC 9266), over TLS 1.3 and TLS 1.2
alike, which we cannot give: offered -PLUS, it chose SCRAM-SHA-256-PLUS and gave up (first seen
over TLS 1.3, mutt's default; then over TLS 1.2 once -PLUS was left out of TLS 1.3 only).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance, require_tool


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    i = make_instance(tmp_path_factory.mktemp("mutt"))
    i.start()
    yield i
    i.stop()


def _mutt(
    inst: Instance, tmp_path: Path, url: str, subject: str, tls13: bool = True
) -> subprocess.CompletedProcess[str]:
    mutt = require_tool("mutt", "mutt")
    home = tmp_path / "home"
    home.mkdir()
    muttrc = home / "muttrc"
    muttrc.write_text(
        f'set smtp_url="{url}"\n'
        f'set smtp_pass="{PASSWORD}"\n'
        "set ssl_starttls=yes\n"
        "set ssl_force_tls=yes\n"
        "set ssl_verify_host=no\n"  # the test certificate does not name 127.0.0.1
        f'set certificate_file="{inst.ca_file}"\n'  # trusted: the test's self-signed cert
        f"set ssl_use_tlsv1_3={'yes' if tls13 else 'no'}\n"
        'set from="alice@example.test"\n'
        "set use_from=yes\n"
        "set record=\n"
        "set copy=no\n"
        f'set folder="{home}/Mail"\n'
        f'set spoolfile="{home}/spool"\n'
    )
    body = tmp_path / "body.txt"
    body.write_text("sent by mutt\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL", "MUTT"))}
    env.update(HOME=str(home), TERM="dumb", LANG="C.UTF-8")
    with body.open("rb") as stdin:
        return subprocess.run(
            [mutt, "-n", "-F", str(muttrc), "-s", subject, "bob@example.test"],
            stdin=stdin, capture_output=True, text=True, timeout=60, env=env, cwd=home,
        )


@pytest.mark.parametrize("tls13", [True, False], ids=["tls13", "tls12"])
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_mutt_sends_with_default_settings(
    inst: Instance, tmp_path: Path, scheme: str, tls13: bool
) -> None:
    port = inst.submission_port if scheme == "smtp" else inst.submissions_port
    subject = uuid.uuid4().hex
    before = len(re.findall(r"auth ok ", inst.log()))
    r = _mutt(inst, tmp_path, f"{scheme}://alice@example.test@127.0.0.1:{port}", subject, tls13)
    assert r.returncode == 0, (r.stdout, r.stderr, inst.log()[-2000:])
    (msg,) = [m for m in inst.messages("bob@example.test") if subject.encode() in m]
    assert b"sent by mutt" in msg and b"with ESMTPSA id" in msg
    oks = re.findall(r"auth ok ip=127\.0\.0\.1 user=alice@example\.test mechanism=(\S+)",
                     inst.log())
    assert len(oks) == before + 1
    # GNU SASL's choice among what is offered: the best SCRAM without binding
    assert oks[-1] == "SCRAM-SHA-256"
    tls = re.findall(r"message qid=\S+ ip=127\.0\.0\.1 tls=(\S+) user=alice", inst.log())
    assert tls[-1] == ("TLSv1.3" if tls13 else "TLSv1.2")

