"""Running as the unprivileged `server.user`: the privilege drop after binding.

postkeep is started as root only to bind the mail ports below 1024 (25, 465, 587, 143, 993).
`serve` binds every listening socket first, then calls `become_service_user`, which drops the
process to `server.user` for good; only then does it read the TLS keys and the master key and
open the store. So nothing that parses client input ever runs as root; root opens no file of the
instance but postkeep.toml (the service user may write the data directory: a key replaced by a
link to a root-only file would be read by root and handed to the unprivileged process); and
every file the store creates (SQLite's -wal and -shm, the writer lock, blobs) is the user's.
Worker processes are started after the drop and inherit it. The CLI run by root (`postkeep user
add`, ...) drops the same way before it opens the store, so it leaves no root-owned file the
server could not open.

Rules (secure by default, `become_service_user`): started as root with `server.user` empty,
postkeep refuses to run; started as root with it set, it drops to it; started as any other
user, `server.user` must be empty or name that user. The one way to serve as root is to say
so: `server.user = "root"` (what `make run` started by root sets for its development
instance, on unprivileged loopback ports); it is logged as a warning at every start. Started
as root, postkeep.toml must be owned by root and writable by nobody else (as sshd's StrictModes): it
names the user root drops to and the ports root binds, so a file the service user could have
written could make a later start drop to another user.

`drop_privileges`, in this order, and why:

1. supplementary groups (`os.initgroups`): exactly the user's, root's gone. It needs the
   privilege (CAP_SETGID) that step 3 gives up, so it comes first;
2. the group ids (`os.setresgid`: real, effective and saved), before the user ids for the same
   reason;
3. the user ids (`os.setresuid`, all three). From root to a uid that is not 0 in all three,
   the kernel clears every capability; the saved uid included, or a later `seteuid(0)` would
   give root back. After this step the process can change neither groups nor ids;
4. umask 0o077: what the server creates is the user's alone;
5. a check that root cannot be regained (`setuid(0)`, `seteuid(0)` and `setgid(0)` must fail)
   and that the ids and groups are the user's: a drop that silently did not happen stops the
   start instead of leaving a server running as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import postkeep
from postkeep import log
from postkeep.config import Config
from postkeep.errors import ConfigError

logger = log.get("server")

KEY = "server.user"
ROOT_USER = "root"  # `server.user = "root"`: no drop, asked for explicitly


def service_account(name: str) -> pwd.struct_passwd:
    """The password entry of `name`; ConfigError when there is none, or when it is root's
    (uid 0) or in group 0 (root's group would be no drop)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(KEY, f"no such user {name!r}: create it (`postkeep init` run as "
                               "root creates one) or name an existing one") from None
    if pw.pw_uid == 0:
        raise ConfigError(KEY, f"{name!r} is root (uid 0): name an unprivileged user")
    if pw.pw_gid == 0:
        raise ConfigError(KEY, f"{name!r} has root's group (gid 0) as its primary group: "
                               "give it a group of its own")
    return pw


def drop_privileges(user: str) -> pwd.struct_passwd:
    """Switch this process, for good, from root to `user` (see the module docstring for the
    order); returns the user's password entry. ConfigError when the user does not exist or is
    root, or when root could be regained afterwards."""
    pw = service_account(user)
    uid, gid = pw.pw_uid, pw.pw_gid
    try:
        os.initgroups(pw.pw_name, gid)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except PermissionError as e:
        raise ConfigError(KEY, f"cannot switch to {user!r}: {e.strerror} (only root can)") from None
    os.umask(0o077)
    regain: list[Callable[[int], None]] = [os.setuid, os.seteuid, os.setgid]
    for attempt in regain:
        try:
            attempt(0)
        except PermissionError:
            continue
        raise ConfigError(KEY, f"root could be regained after switching to {user!r} "
                               f"({attempt.__name__}(0) succeeded); refusing to run")
    groups = set(os.getgroups())
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or 0 in groups:
        raise ConfigError(KEY, f"switching to {user!r} left uids {os.getresuid()}, gids "
                               f"{os.getresgid()}, groups {sorted(groups)}; refusing to run")
    return pw


def become_service_user(cfg: Config, *, serving: bool = True) -> None:
    """From here on, run as `server.user` (the rules are in the module docstring): drop to it
    when running as root, else check that it is empty or names this process's user. After a
    drop, check that the user can run this Python and read postkeep and the config file, which
    the worker processes started later need. Every refusal is a ConfigError naming the key."""
    name = cfg.server.user
    if name == ROOT_USER:
        if os.geteuid() != 0:
            raise ConfigError(KEY, "is 'root' but postkeep does not run as root")
        if serving:
            logger.warning("running as root: server.user = root keeps every privilege (for a "
                           "development instance only; name an unprivileged user in "
                           "production)")
        return
    if os.geteuid() != 0:
        if name and service_account(name).pw_uid != os.geteuid():
            current = pwd.getpwuid(os.geteuid()).pw_name
            raise ConfigError(KEY, f"is {name!r} but postkeep runs as {current!r}: start it as "
                                   f"root (it drops to {name!r} after binding) or as {name!r}")
        return
    if not name:
        raise ConfigError(KEY, "postkeep was started as root and server.user is empty: set it "
                               "to the unprivileged user that owns the data directory "
                               "(`postkeep init` run as root creates one); postkeep never runs "
                               "as root")
    service_account(name)
    if cfg.source is not None:
        _check_config_file(cfg.source)
    pw = drop_privileges(name)
    _check_installation(name)
    if cfg.source is not None and not os.access(cfg.source, os.R_OK):
        group = grp.getgrgid(pw.pw_gid).gr_name
        raise ConfigError(KEY, f"{name!r} cannot read {cfg.source}, which its worker processes "
                               f"read: make it root:{group} mode 0640, with every directory "
                               "above it searchable by that user")
    logger.info("privileges dropped user=%s uid=%d gid=%d", name, pw.pw_uid, pw.pw_gid)


def _check_config_file(path: Path) -> None:
    """The config root read and is about to act on (whom to drop to) must be root's, and no one
    else may write it."""
    st = path.stat()
    if st.st_uid != 0:
        raise ConfigError(KEY, f"{path} is owned by uid {st.st_uid}, not root: started as root, "
                               f"postkeep reads it only if root owns it (chown root {path})")
    if stat.S_IMODE(st.st_mode) & 0o022:
        raise ConfigError(KEY, f"{path} is writable by group or others (mode "
                               f"{stat.S_IMODE(st.st_mode):04o}): chmod 640 {path}")


def _check_installation(user: str) -> None:
    """After the drop, the user must reach this Python and its standard library (worker
    processes run it; modules load lazily) and postkeep's package."""
    needed = [
        (sys.executable, os.X_OK),
        (os.path.dirname(os.__file__), os.R_OK | os.X_OK),
        (os.path.dirname(postkeep.__file__), os.R_OK | os.X_OK),
    ]
    for path, mode in needed:
        if not os.access(path, mode):
            raise ConfigError(KEY, f"{user!r} cannot {'run' if mode == os.X_OK else 'read'} "
                                   f"{path}: install Python and postkeep where that user can "
                                   "read them (not under a private home directory)")
