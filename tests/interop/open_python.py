"""Run a command where unprivileged users can reach this Python, without changing the host.

postkeep started as root drops to `server.user`, which must then run the interpreter and read
the standard library and postkeep (`postkeep.server.privileges` checks it). On a test machine
whose Python lives under a private directory (pyenv in /root, mode 0700) no unprivileged user
can. Run as root, `python open_python.py PATH... -- COMMAND...` enters a private mount
namespace of its own; there each private directory on the way to a PATH gets a tmpfs mounted
over it (mode 0711) holding only the entries on the way, bound from the real ones; then it
execs COMMAND (same process: signals and /proc see the command itself). The host, and every
process outside the namespace, see the directories as they are.

`private_ancestors` is what the tests ask first: when it finds nothing, no wrapper is needed.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections import defaultdict

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def private_ancestors(paths: list[str]) -> dict[str, set[str]]:
    """{directory others may not search: {its entries on the way to `paths`}}."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        parts = os.path.realpath(path).split(os.sep)[1:]
        current = os.sep
        for part in parts:
            if not stat.S_IMODE(os.stat(current).st_mode) & stat.S_IXOTH:
                found[current].add(part)
                break
            current = os.path.join(current, part)
    return dict(found)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _open_up(libc: ctypes.CDLL, directory: str, entries: set[str]) -> None:
    """Mount a tmpfs (0711) over `directory` holding only `entries`, bound from the real ones
    (reached through descriptors opened before the tmpfs hides them)."""
    fds = {name: os.open(os.path.join(directory, name), os.O_PATH) for name in entries}
    _check(libc.mount(b"tmpfs", directory.encode(), b"tmpfs", 0, b"mode=0711"), directory)
    for name, fd in fds.items():
        target = os.path.join(directory, name)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _check(libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND, None),
               target)
        os.close(fd)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    paths, command = argv[:split], argv[split + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "private /")
    # a private directory inside an opened one shows up once the outer one is open
    opened: set[str] = set()
    while plan := private_ancestors(paths):
        for directory, entries in sorted(plan.items()):
            if directory in opened:
                raise SystemExit(f"open_python: {directory} is still private")
            _open_up(libc, directory, entries)
            opened.add(directory)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
