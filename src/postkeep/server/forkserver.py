"""The fork server: worker processes forked from a process that imported everything a worker
runs, before any thread or event loop existed.

A fresh interpreter per worker pays for its imports again (the main process and two workers
spawned as `python -m postkeep ...` held 177 MiB PSS idle); children forked after the imports
share those pages copy-on-write, and `gc.freeze()` before the fork keeps the cyclic collector
from writing to every object (which would un-share them). A process may fork safely only while
it has one thread and no running event loop: the main process has both once it serves, so at
start, before its event loop, it forks this server (`ForkServer.start`), and the server forks
every worker on request: at start and for each restart.

The server's protocol, on a SOCK_SEQPACKET socketpair (one datagram is one message):

- main process -> server: ``spawn <index>``;
- server -> main process: ``spawned <index> <pid>``, with one descriptor (SCM_RIGHTS): the main
  process's end of the new worker's channel (a socketpair; the worker holds the other end);
- server -> main process: ``failed <index> <errno>``: the fork (or the channel's socketpair)
  failed (EAGAIN at a task limit, ENOMEM, EMFILE): the main process retries later, the server
  goes on;
- server -> main process: ``exited <pid> <status>``, the status as `asyncio`'s returncode (the
  exit code, or minus the signal that ended the worker);
- the main process's end closes (it stopped, or died): the server exits; its workers stop on
  their own, as their channels close.

The server and its workers run in a session of their own (`os.setsid`), so a terminal's Ctrl-C
reaches only the main process, which stops the workers in order (SIGTERM: each ends its
sessions with 421 / BYE); the server ignores SIGINT and SIGTERM and ends with its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable

import setproctitle

from postkeep import log

logger = log.get("server")

# What a child runs: `target(index, channel)`, returning its exit code. It must not return into
# the server's loop, so the server calls it and then `os._exit`s.
Target = Callable[[int, socket.socket], int]

_MAX_MESSAGE = 256


class ForkServerGone(RuntimeError):
    """The fork server exited: no worker can be started any more."""


class ForkFailed(OSError):
    """The fork server could not fork this worker now (its errno says why); it goes on."""


def _child(target: Target, index: int, channel: socket.socket, close: list[socket.socket]) -> None:
    """In a new worker: drop the server's descriptors and signal set-up, run `target`, exit."""
    code = 1
    try:
        for sock in close:
            sock.close()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # still blocked, as in the main process at fork
        code = target(index, channel)
    except BaseException:
        logger.exception("worker=%d failed", index)
    finally:
        os._exit(code)


def _serve(control: socket.socket, target: Target, title: str) -> None:
    """The server's loop: fork a worker per request, report the exits, end with `control`."""
    setproctitle.setproctitle(title)
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    while True:
        try:
            readable, _, _ = select.select([control, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while wake_r.recv(4096):
                    pass
            _reap(control)
        if control in readable:
            request = control.recv(_MAX_MESSAGE)
            if not request:  # the main process is gone
                return
            words = request.split()
            if len(words) != 2 or words[0] != b"spawn" or not words[1].isdigit():
                logger.error("fork server: unknown request %r", request[:40])
                return
            index = int(words[1])
            try:
                ours, theirs = socket.socketpair()
            except OSError as e:
                control.send(b"failed %d %d" % (index, e.errno or 0))
                continue
            try:
                pid = os.fork()
            except OSError as e:
                ours.close()
                theirs.close()
                control.send(b"failed %d %d" % (index, e.errno or 0))
                continue
            if pid == 0:
                ours.close()
                _child(target, index, theirs, [control, wake_r, wake_w])
            theirs.close()
            socket.send_fds(control, [b"spawned %d %d" % (index, pid)], [ours.fileno()])
            ours.close()


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            control.send(b"exited %d %d" % (pid, code))


class ForkServer:
    """The main process's side of the fork server."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.control = control
        self._spawns: deque[tuple[int, asyncio.Future[tuple[int, socket.socket]]]] = deque()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._reading = False
        self.gone = False
        self.on_gone: Callable[[], None] | None = None

    @classmethod
    def start(cls, target: Target, title: str = "postkeep: fork server") -> ForkServer:
        """Fork the server (its process title: `title`). Call it before any thread or event
        loop of this process starts."""
        if threading.active_count() != 1:
            raise RuntimeError("the fork server must start before any other thread")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 0
            try:
                _serve(theirs, target, title)
            except BaseException:
                logger.exception("fork server failed")
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def _start_reading(self) -> None:
        if not self._reading:
            self.control.setblocking(False)
            asyncio.get_running_loop().add_reader(self.control.fileno(), self._readable)
            self._reading = True

    async def spawn(self, index: int) -> tuple[int, socket.socket]:
        """Fork worker `index`: its pid and this process's end of its channel."""
        if self.gone:
            raise ForkServerGone("the fork server has exited")
        self._start_reading()
        future: asyncio.Future[tuple[int, socket.socket]] = (
            asyncio.get_running_loop().create_future()
        )
        self.control.send(b"spawn %d" % index)
        self._spawns.append((index, future))  # after the send: a failed one leaves no entry
        return await future

    async def wait(self, pid: int) -> int:
        """The exit status of worker `pid` (the exit code, or minus the signal)."""
        future = self._exit(pid)
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._exits.pop(pid, None)

    def _exit(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
            if self.gone:
                future.set_exception(ForkServerGone("the fork server has exited"))
        return future

    def _readable(self) -> None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(self.control, _MAX_MESSAGE, 1)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message:
            self._lost()
            return
        words = message.split()
        if words[:1] in ([b"spawned"], [b"failed"]) and len(words) == 3 and self._spawns:
            _index, future = self._spawns.popleft()  # the server answers in order
            channel = socket.socket(fileno=fds.pop(0)) if fds else None
            for fd in fds:
                os.close(fd)
            if words[0] == b"failed" or channel is None:  # no channel: MSG_CTRUNC, fds full
                if channel is not None:
                    channel.close()
                errno = int(words[2]) if words[0] == b"failed" else 0
                if not future.done():
                    future.set_exception(ForkFailed(errno, "the fork server could not fork"))
            elif future.done():  # the spawn was cancelled
                channel.close()
            else:
                future.set_result((int(words[2]), channel))
            return
        for fd in fds:
            os.close(fd)
        if words[:1] == [b"exited"] and len(words) == 3:
            future = self._exit(int(words[1]))
            if not future.done():
                future.set_result(int(words[2]))
            return
        logger.error("fork server sent %r", message[:40])

    def _lost(self) -> None:
        self.gone = True
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self._reading = False
        error = ForkServerGone("the fork server has exited")
        for _index, future in self._spawns:
            if not future.done():
                future.set_exception(error)
        self._spawns.clear()
        for future in self._exits.values():
            if not future.done():
                future.set_exception(error)
        if self.on_gone is not None:
            self.on_gone()

    def close(self) -> None:
        """End the server (its workers must be stopped already) and wait for it to exit."""
        if self._reading:
            with contextlib.suppress(RuntimeError):  # no loop running any more
                asyncio.get_running_loop().remove_reader(self.control.fileno())
            self._reading = False
        self.control.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
