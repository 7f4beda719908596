"""Privileges (`postkeep.server.privileges`): started as root to bind the mail ports, `postkeep
serve` and its worker processes run as `server.user`; `postkeep init` run by root creates that
user and hands it the instance; root's CLI leaves no file of root's behind; without a user, root
is refused.

The server runs in a network namespace of the test's own, so that it listens on the real ports
25, 465, 587, 143 and 993 of 127.0.0.1 without touching the host's, under the limits of
contrib/systemd/postkeep.service (no new privileges; capabilities: bind, setuid, setgid only)
applied with setpriv. Needs root (CI runs as root) and `ip netns`; skipped otherwise.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import PASSWORD, PYTHON_POSTKEEP, READY, SERVICE_PREFIX

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the server drops from root to its user"
)

IP = shutil.which("ip")
# What contrib/systemd/postkeep.service gives the server: no new privileges, and only the
# capabilities a bind-then-drop needs (no CAP_DAC_OVERRIDE: root reads only its own config).
AS_SYSTEMD = ["setpriv", "--no-new-privs", "--inh-caps=-all",
              "--bounding-set=-all,+net_bind_service,+setuid,+setgid"]
LISTEN = [("smtp", "listen", 25), ("submission", "tls_listen", 465),
          ("submission", "listen", 587), ("imap", "listen", 143), ("imap", "tls_listen", 993)]

CLIENT = r"""
import imaplib, smtplib, ssl, sys
ca, password = sys.argv[1], sys.argv[2]
alice = "alice@example.test"
tls = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("127.0.0.1", 25, timeout=30) as c:
    c.starttls(context=tls)
    c.sendmail("someone@remote.test", [alice], b"Subject: port 25\r\n\r\nhello\r\n")
with smtplib.SMTP("127.0.0.1", 587, timeout=30) as c:
    c.starttls(context=tls)
    c.login(alice, password)
    c.sendmail(alice, [alice], f"From: {alice}\r\nSubject: port 587\r\n\r\nhi\r\n")
with smtplib.SMTP_SSL("127.0.0.1", 465, context=tls, timeout=30) as c:
    c.login(alice, password)
    c.sendmail(alice, [alice], f"From: {alice}\r\nSubject: port 465\r\n\r\nhi\r\n")
imap = imaplib.IMAP4("127.0.0.1", 143, timeout=30)
imap.starttls(tls)
imap.login(alice, password)
imap.logout()
imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=tls, timeout=30)
imap.login(alice, password)
imap.select("INBOX")
typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print(b" ".join(part[1] for part in data if isinstance(part, tuple)).decode())
imap.logout()
"""


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)


def postkeep(*args: str, netns: str | None = None, wrap: list[str] | None = None,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `postkeep ARGS` (in `netns`, through `wrap`: setpriv)."""
    return _run(_argv(list(args), netns, wrap or []), input=input)


def _argv(args: list[str], netns: str | None, wrap: list[str]) -> list[str]:
    inside = ["ip", "netns", "exec", netns] if netns else []
    return [*inside, *SERVICE_PREFIX, *wrap, *PYTHON_POSTKEEP, *args]


def as_user(name: str) -> list[str]:
    return ["setpriv", f"--reuid={name}", f"--regid={pwd.getpwnam(name).pw_gid}",
            "--init-groups"]


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, its loopback up; deleted afterwards."""
    if IP is None:
        pytest.skip("ip (iproute2) is missing: no network namespace to run in")
    name = f"pk-{secrets.token_hex(4)}"
    added = _run([IP, "netns", "add", name])
    if added.returncode != 0:
        pytest.skip(f"ip netns add failed: {added.stderr.strip()}")
    try:
        subprocess.run([IP, "netns", "exec", name, IP, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run([IP, "netns", "del", name], check=False)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the service user can reach (pytest's own are 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="postkeep-privileges-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_user() -> Iterator[str]:
    """The name of a user `postkeep init` is to create; the user is deleted afterwards."""
    name = f"pk{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)


def init(directory: Path, user: str) -> None:
    r = postkeep("init", str(directory), "--user", user, "--domain", "example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    r = postkeep("--dir", str(directory), "user", "add", "alice@example.test",
                 "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stdout + r.stderr


def edit_config(directory: Path, section: str, key: str, value: str) -> None:
    """Replace `key = ...` in `[section]` (the file keeps its owner and mode)."""
    path = directory / "postkeep.toml"
    text = path.read_text()
    pattern = rf"(\[{section}\]\n(?:[^\[].*\n)*?){key} = .*\n"
    if re.search(pattern, text):
        text = re.sub(pattern, rf"\g<1>{key} = {value}\n", text, count=1)
    else:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
    path.write_text(text)


def root_owned(directory: Path) -> list[Path]:
    found = [directory] if directory.stat().st_uid == 0 else []
    return found + sorted(p for p in directory.rglob("*") if p.lstat().st_uid == 0)


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant (/proc/PID/task/*/children)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(child) for child in (task / "children").read_text().split()]
    return tree


def status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


def test_serves_the_privileged_ports_as_its_user(
    netns: str, workdir: Path, service_user: str
) -> None:
    directory = workdir / "instance"
    init(directory, service_user)
    pw = pwd.getpwnam(service_user)
    assert pw.pw_dir == str(directory) and pw.pw_shell.endswith("nologin")
    assert f'user = "{service_user}"' in (directory / "postkeep.toml").read_text()
    for key in (directory / "master.key", directory / "tls" / "key.pem"):
        st = key.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, pw.pw_uid, pw.pw_gid)
    config = (directory / "postkeep.toml").stat()
    assert (stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid) == (0o640, 0, pw.pw_gid)
    # init and `user add`, run by root, opened the store as the user: nothing else is root's
    assert root_owned(directory) == [directory / "postkeep.toml"]

    for section, key, port in LISTEN:
        edit_config(directory, section, key, f'["127.0.0.1:{port}"]')
    edit_config(directory, "server", "processes", "2")  # worker processes: they must drop too
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _argv(["--dir", str(directory), "serve"], netns, AS_SYSTEMD),
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while READY not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        tree = process_tree(proc.pid)
        assert len(tree) == 4, tree  # the main process, the fork server, two workers
        for pid in tree:
            fields = status(pid)
            assert "0" not in fields["Uid"][:3], (pid, fields["Uid"])  # real, effective, saved
            assert set(fields["Uid"]) == {str(pw.pw_uid)}, (pid, fields["Uid"])
            assert set(fields["Gid"]) == {str(pw.pw_gid)}, (pid, fields["Gid"])
            assert "0" not in fields["Groups"] and int(fields["CapEff"][0], 16) == 0, fields
        client = _run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT,
                       str(directory / "tls" / "cert.pem"), PASSWORD])
        assert client.returncode == 0, client.stderr + log_path.read_text()
        for subject in ("port 25", "port 587", "port 465"):
            assert subject in client.stdout, client.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log_path.read_text()
    log = log_path.read_text()
    assert f"privileges dropped user={service_user} uid={pw.pw_uid}" in log
    for _section, _key, port in LISTEN:
        assert f"listening on 127.0.0.1:{port} " in log
    # what the server created (SQLite's files, blobs, the writer lock) is the user's alone
    assert root_owned(directory) == [directory / "postkeep.toml"]
    created = [*directory.glob("store.db*"), *(directory / "blobs").rglob("*")]
    # the database and its lock at least (small messages live in the database: no blob file)
    assert len(created) >= 2 and all(p.stat().st_mode & 0o077 == 0 for p in created), [
        (p, oct(p.stat().st_mode)) for p in created]


def test_root_refuses_to_run_without_a_user_or_with_a_config_others_may_write(
    netns: str, workdir: Path, service_user: str
) -> None:
    directory = workdir / "instance"
    init(directory, service_user)
    config = directory / "postkeep.toml"
    serve = ["--dir", str(directory), "serve"]

    def refused(problem: str) -> None:
        r = postkeep(*serve, netns=netns, wrap=AS_SYSTEMD)
        assert r.returncode == 2, r.stdout + r.stderr
        last = r.stderr.strip().splitlines()[-1]  # one line, after the open-files one
        assert last.startswith(f"postkeep: config error: server.user: {problem}"), r.stderr
        assert "Traceback" not in r.stderr and "listening on" not in r.stderr, r.stderr

    edit_config(directory, "server", "user", '""')
    refused("postkeep was started as root and server.user is empty")
    edit_config(directory, "server", "user", '"pk-nobody-here"')
    refused("no such user 'pk-nobody-here'")
    edit_config(directory, "server", "user", f'"{service_user}"')
    config.chmod(0o660)
    refused(f"{config} is writable by group or others (mode 0660)")
    config.chmod(0o644)  # root without CAP_DAC_OVERRIDE could not read it otherwise
    os.chown(config, pwd.getpwnam(service_user).pw_uid, -1)
    refused(f"{config} is owned by uid {pwd.getpwnam(service_user).pw_uid}, not root")
    os.chown(config, 0, -1)
    config.chmod(0o640)
    # and the CLI run by root refuses as the server does
    edit_config(directory, "server", "user", '""')
    r = postkeep("--dir", str(directory), "user", "list")
    assert r.returncode == 2 and "server.user: postkeep was started as root" in r.stderr


def test_as_another_user_server_user_must_be_that_user(
    netns: str, workdir: Path, service_user: str
) -> None:
    directory = workdir / "instance"
    init(directory, service_user)
    me = as_user(service_user)
    r = postkeep("--dir", str(directory), "user", "list", wrap=me)
    assert r.returncode == 0 and "alice@example.test" in r.stdout, r.stderr
    edit_config(directory, "server", "user", '"nobody"')
    r = postkeep("--dir", str(directory), "serve", netns=netns, wrap=me)
    assert r.returncode == 2, r.stderr
    assert (f"server.user: is 'nobody' but postkeep runs as '{service_user}': start it as "
            "root") in r.stderr
    # init run by another user creates no user and leaves server.user empty
    own = workdir / "own"
    own.mkdir()
    os.chown(own, pwd.getpwnam(service_user).pw_uid, -1)
    r = postkeep("init", str(own / "instance"), "--user", "someone", wrap=me)
    assert r.returncode == 1 and "--user: only init run as root" in r.stderr
    r = postkeep("init", str(own / "instance"), wrap=me)
    assert r.returncode == 0, r.stderr
    assert 'user = ""' in (own / "instance" / "postkeep.toml").read_text()
    assert "system user" not in r.stdout


def test_root_serves_as_root_only_when_server_user_says_root(workdir: Path) -> None:
    """`init --user root` (what `make run` started by root does for its development instance)
    creates no user and writes `server.user = "root"`; `serve` then keeps root and says so in
    a warning at start."""
    directory = workdir / "dev"
    r = postkeep("init", str(directory), "--user", "root", "--domain", "example.test",
                 "--base-port", "23500")
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'user = "root"' in (directory / "postkeep.toml").read_text()
    assert all(p.stat().st_uid == 0 for p in directory.rglob("*"))
    log_path = workdir / "dev.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(_argv(["--dir", str(directory), "serve"], None, []),
                                stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while READY not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        text = log_path.read_text()
        assert "WARNING postkeep.server: running as root: server.user = root" in text, text
        assert "privileges dropped" not in text
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log_path.read_text()
