"""The `postkeep` account commands with Unicode addresses (issue 12): one canonical form
(NFC, IDNA), no invisible characters, no look-alikes or mixed scripts unless forced (UTS #39)."""

from __future__ import annotations

import unicodedata

from tests.interop.conftest import PASSWORD, Instance

NFC = "üser@example.test"
NFD = unicodedata.normalize("NFD", NFC)
CYRILLIC_BOB = "b\u043eb@example.test"  # with CYRILLIC SMALL LETTER O


def add(inst: Instance, address: str, *extra: str, check: bool = False) -> tuple[int, str]:
    r = inst.cli("user", "add", address, *extra, "--password-stdin", input=PASSWORD + "\n",
                 check=check)
    return r.returncode, r.stdout + r.stderr


def users(inst: Instance) -> list[str]:
    return [line.split("\t")[0] for line in inst.cli("user", "list").stdout.splitlines()]


def test_nfd_form_of_an_existing_user_is_that_user(fresh: Instance) -> None:
    add(fresh, NFC, check=True)
    code, out = add(fresh, NFD)
    assert code == 1 and f"account {NFC} exists already" in out
    assert users(fresh).count(NFC) == 1 and NFD not in users(fresh)
    fresh.cli("user", "passwd", NFD, "--password-stdin", input=PASSWORD + "!\n")
    fresh.cli("send-as", "add", NFD, unicodedata.normalize("NFD", "büro@example.test"))
    assert fresh.cli("send-as", "list", NFC).stdout.split() == ["büro@example.test"]
    fresh.cli("user", "remove", NFD)
    assert NFC not in users(fresh)


def test_confusable_user_is_refused_unless_forced(fresh: Instance) -> None:
    code, out = add(fresh, CYRILLIC_BOB)
    assert code == 1
    assert "looks like the existing account bob@example.test" in out
    assert "U+043E CYRILLIC SMALL LETTER O" in out and "--force" in out
    assert CYRILLIC_BOB not in users(fresh)
    add(fresh, CYRILLIC_BOB, "--force", check=True)
    assert CYRILLIC_BOB in users(fresh)


def test_confusable_alias_is_refused_unless_forced(fresh: Instance) -> None:
    lookalike = "\u0430lice@example.test"  # with CYRILLIC SMALL LETTER A
    r = fresh.cli("alias", "add", lookalike, "bob@example.test", check=False)
    assert r.returncode == 1 and "looks like the existing account alice@example.test" in r.stderr
    fresh.cli("alias", "add", "team1@example.test", "bob@example.test")
    r = fresh.cli("alias", "add", "teaml@example.test", "bob@example.test", check=False)
    assert r.returncode == 1 and "looks like the existing alias team1@example.test" in r.stderr
    fresh.cli("alias", "add", lookalike, "bob@example.test", "--force")
    assert lookalike in fresh.cli("alias", "list").stdout


def test_mixed_script_local_part_is_refused_unless_forced(fresh: Instance) -> None:
    mixed = "m\u0430ria@example.test"  # Latin with a Cyrillic a; no maria exists
    code, out = add(fresh, mixed)
    assert code == 1 and "mixes scripts (Latin, Cyrillic)" in out and "--force" in out
    add(fresh, "мария@example.test", check=True)  # one script: fine
    add(fresh, "josé@example.test", check=True)
    add(fresh, mixed, "--force", check=True)
    assert {mixed, "мария@example.test", "josé@example.test"} <= set(users(fresh))


def test_invisible_characters_are_refused_even_forced(fresh: Instance) -> None:
    for invisible, name in (("\u200b", "ZERO WIDTH SPACE"), ("\u202e", "RIGHT-TO-LEFT OVERRIDE")):
        for command in (["user", "add", f"b{invisible}ob@example.test", "--force",
                         "--password-stdin"],
                        ["alias", "add", f"t{invisible}eam@example.test", "bob@example.test",
                         "--force"],
                        ["alias", "add", "team@example.test", f"b{invisible}ob@remote.test"],
                        ["send-as", "add", "bob@example.test", f"b{invisible}ob@remote.test"]):
            r = fresh.cli(*command, input=PASSWORD + "\n", check=False)
            assert r.returncode == 1, command
            assert f"invisible or control character (U+{ord(invisible):04X} {name})" in r.stderr
    assert all(u.isascii() for u in users(fresh))
    assert all(a.isascii() for a in fresh.cli("alias", "list").stdout.split())
    assert fresh.cli("send-as", "list", "bob@example.test").stdout == ""


def test_domains_are_stored_in_idna_canonical_form(fresh: Instance) -> None:
    fresh.cli("domain", "add", "XN--EXMPLE-CUA.test.")
    r = fresh.cli("domain", "add", unicodedata.normalize("NFD", "EXÄMPLE.test"), check=False)
    assert r.returncode == 1 and "domain exämple.test exists already" in r.stderr
    assert "exämple.test" in fresh.cli("domain", "list").stdout.split()
    add(fresh, "jörg@xn--exmple-cua.test", check=True)
    assert "jörg@exämple.test" in users(fresh)
