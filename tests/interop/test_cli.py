"""The `postkeep` command as an operator uses it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.interop.conftest import PASSWORD, POSTKEEP, Instance, reachable


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSTKEEP, *args], input=input, capture_output=True, text=True,
                          timeout=60)


def test_init_creates_a_working_instance(tmp_path: Path) -> None:
    d = reachable(tmp_path) / "inst"
    r = run("init", str(d), "--hostname", "mx.example.org", "--domain", "example.org",
            "--base-port", "3100")
    assert r.returncode == 0, r.stderr
    assert "postmaster@example.org password: " in r.stdout
    assert 'listen = ["127.0.0.1:3125"]' in (d / "postkeep.toml").read_text()
    assert stat.S_IMODE(os.stat(d / "master.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / "tls" / "key.pem").st_mode) == 0o600
    assert run("--dir", str(d), "check").stdout.strip() == "ok"
    r = run("init", str(d))
    assert r.returncode == 1 and "exists already" in r.stderr


def test_user_domain_alias_commands(fresh: Instance) -> None:
    assert "alice@example.test" in fresh.cli("user", "list").stdout
    r = fresh.cli("user", "add", "new@example.test")
    assert "password: " in r.stdout  # generated and shown once
    r = fresh.cli("user", "add", "new@example.test", "--password-stdin", input=PASSWORD + "\n",
                  check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    r = fresh.cli("user", "add", "x@nowhere.test", "--password-stdin", input=PASSWORD + "\n",
                  check=False)
    assert r.returncode == 1 and "not a local domain" in r.stderr
    r = fresh.cli("user", "add", "weak@example.test", "--password-stdin", input="short\n",
                  check=False)
    assert r.returncode == 1 and "at least 12" in r.stderr
    r = fresh.cli("user", "add", "bad address@example.test", check=False)
    assert r.returncode == 1 and "not a valid address" in r.stderr
    fresh.cli("user", "passwd", "new@example.test", "--password-stdin", input=PASSWORD + "x\n")
    fresh.cli("alias", "add", "@example.test", "alice@example.test")
    assert "@example.test\talice@example.test" in fresh.cli("alias", "list").stdout
    r = fresh.cli("domain", "remove", "example.test", check=False)
    assert r.returncode == 1
    fresh.cli("alias", "remove", "@example.test")
    fresh.cli("user", "remove", "new@example.test")
    assert "new@example.test" not in fresh.cli("user", "list").stdout
    fresh.cli("domain", "add", "Other.Test")
    assert fresh.cli("domain", "list").stdout.split() == ["example.test", "other.test"]
    fresh.cli("domain", "remove", "other.test")


def test_bad_config_is_one_clear_line(fresh: Instance) -> None:
    cfg = fresh.dir / "postkeep.toml"
    original = cfg.read_text()
    in_smtp = {
        "max_recipients = 'many'": "smtp.max_recipients: expected an integer",
        "max_recipients = 5": "smtp.max_recipients: must be at least 100",
        "max_command_line = true": "smtp.max_command_line: expected an integer",
    }
    appended = {
        "[smtpd]\nx = 1\n": "smtpd: unknown key",
        "[server\n": "is not valid TOML",
        "[log]\nlevel = 'loud'\n": "log.level: must be one of",
    }
    variants = [(original.replace("[smtp]\n", f"[smtp]\n{line}\n"), msg)
                for line, msg in in_smtp.items()]
    variants += [(original.replace('listen = ["127.0.0.1', 'listen = ["localhost'),
                  'smtp.listen[0]: "localhost" is not an IP address')]
    variants += [(original + "\n" + extra, msg) for extra, msg in appended.items()]
    for text, message in variants:
        cfg.write_text(text)
        r = fresh.cli("serve", check=False)
        assert r.returncode == 2, (text, r.stderr)
        assert message in r.stderr, (text, r.stderr)
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    cfg.write_text(original)


def test_check_reports_problems(fresh: Instance) -> None:
    os.chmod(fresh.dir / "tls" / "key.pem", 0o644)
    os.chmod(fresh.dir / "master.key", 0o644)
    r = fresh.cli("check", check=False)
    assert r.returncode == 1
    assert "tls.key_file" in r.stdout and "readable by others" in r.stdout
    assert "store.master_key_file" in r.stdout


def test_config_reference_is_up_to_date() -> None:
    doc = Path(__file__).parents[2] / "docs" / "config.md"
    assert doc.read_text() == run("config-reference").stdout
