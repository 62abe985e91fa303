"""`mediagate serve --workers N`: N server processes on one port.

The parent binds the port, forks N workers that each run the single-process
server (web/server.py) on sockets the parent opened for it, restarts a worker
that dies unexpectedly, and on SIGTERM or SIGINT forwards SIGTERM to every
worker and waits for each to drain. It serves no request itself.

Each worker has its own listening socket on the port (SO_REUSEPORT), opened by
the parent, rather than all sharing one: on a shared socket asyncio accepts every
waiting connection in one go, so a burst of new keep-alive connections (a load
balancer filling its pool) lands on one worker and stays there; bench/scale.py
measured one worker doing 60-110 times the other's work that way (plain aiohttp
alike). SO_REUSEPORT spreads connections over the sockets by the kernel's hash.
What it costs: connections queued on the socket of a worker that dies are reset
(the parent then closes that socket, so new ones go to the others until the
worker is back), and another process of the same user could join the port.
Opening the sockets in the parent keeps one clear line for a port in use, and
makes port 0 one port for all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from mediagate.config import Settings, SettingsError

log = structlog.get_logger("mediagate.supervisor")

# A worker that exits with this status met a bad setting (its one line is on
# stderr already): restarting it cannot help, so the supervisor stops.
SETTINGS_ERROR_STATUS = 2
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A worker that ran this long before dying starts again after FIRST_RESTART_DELAY.
STABLE_AFTER = 30.0
# Beyond MEDIAGATE_SHUTDOWN_TIMEOUT: the workers' own final grace, then SIGKILL.
KILL_MARGIN = 10.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_WATCHED = {signal.SIGCHLD, *STOP_SIGNALS}
_PR_SET_PDEATHSIG = 1
# prometheus_client's multiprocess mode, read when it is first imported.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def several_processes_refusal(settings: Settings) -> str | None:
    """Why several processes may not share this catalog, or None when they may.

    With PostgreSQL the rules that keep an upload correct (one writer per chunk,
    complete waits for chunks in flight, background work claimed once) hold in the
    catalog (core/session_locks.py); with SQLite they hold in one process's memory."""
    if settings.database_url is not None:
        return None
    return (
        "invalid setting MEDIAGATE_WORKERS (or --workers): more than 1 needs "
        "MEDIAGATE_DATABASE_URL (a PostgreSQL catalog), where the rules that keep an upload "
        "correct hold across processes; with SQLite they hold in one process only: set "
        "MEDIAGATE_WORKERS=1, or run on PostgreSQL"
    )


@dataclass
class _Slot:
    """One worker's place: its process now, and how often it failed in a row."""

    index: int
    sockets: list[socket.socket] | None = None
    pid: int | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


Listen = Callable[[], list[socket.socket]]
Worker = Callable[[list[socket.socket]], int]


def supervise(workers: int, run_worker: Worker, *, listen: Listen, stop_timeout: float) -> int:
    """Run `run_worker` in `workers` forked processes until SIGTERM or SIGINT.

    Each worker serves the sockets `listen` opened for it in the parent (raises
    SettingsError before any worker starts if it cannot). Returns 0 when every
    worker drained and exited 0, SETTINGS_ERROR_STATUS when a worker reported a
    bad setting, 1 otherwise."""
    supervisor = _Supervisor(workers, run_worker, listen, stop_timeout + KILL_MARGIN)
    with _shared_metrics():
        return supervisor.run()


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A new directory where every worker keeps its metrics, for a scrape of any one of
    them to add up (metrics.py); removed when the server stops.

    New at each start, so no count of an earlier run is added in. Not in the data
    directory: instances that share a data volume must not share their metrics."""
    if "prometheus_client" in sys.modules:
        # Its metrics live in this process's memory already, and so would the workers'.
        raise RuntimeError("prometheus_client was imported before the workers' metrics were set up")
    directory = tempfile.mkdtemp(prefix="mediagate-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[METRICS_DIR_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


class _Supervisor:
    def __init__(self, workers: int, run_worker: Worker, listen: Listen, kill_after: float):
        self._slots = [_Slot(index) for index in range(workers)]
        self._run_worker = run_worker
        self._listen = listen
        self._kill_after = kill_after
        self._stopping_since: float | None = None
        self._status = 0

    def run(self) -> int:
        try:
            for slot in self._slots:
                slot.sockets = self._listen()
        except BaseException:
            self._close_sockets()
            raise
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            log.info("supervisor.started", workers=len(self._slots), pid=os.getpid())
            for slot in self._slots:
                self._start(slot, previous_mask)
            while self._stopping_since is None or self._running():
                received = signal.sigtimedwait(_WATCHED, self._wait_seconds())
                if received is not None and received.si_signo in STOP_SIGNALS:
                    self._stop(signal.Signals(received.si_signo).name)
                self._reap()
                self._restart_due(previous_mask)
                self._kill_if_overdue()
        finally:
            for slot in self._running():
                _send(slot, signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        log.info("supervisor.stopped", status=self._status)
        return self._status

    def _running(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.pid is not None]

    def _wait_seconds(self) -> float:
        # SIGCHLD is what normally ends the wait; the timeout also runs restarts
        # and the kill deadline on time.
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.01, min([1.0, *(at - time.monotonic() for at in due)]))

    def _start(self, slot: _Slot, signal_mask: set[int | signal.Signals]) -> None:
        parent = os.getpid()
        sys.stdout.flush()  # or the child would write the parent's buffered lines again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(self._be_worker(slot, parent, signal_mask))
        slot.pid, slot.started_at, slot.restart_at = pid, time.monotonic(), None
        log.info("worker.started", worker=slot.index, pid=pid)

    def _be_worker(self, slot: _Slot, parent: int, signal_mask: set[int | signal.Signals]) -> int:
        try:
            if sys.platform == "linux":  # a SIGKILLed supervisor must not leave workers behind
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # it died before prctl took effect
                return 1
            signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
            own = slot.sockets or []
            for other in self._slots:  # or a closed socket would live on in this worker
                if other is not slot:
                    for sock in other.sockets or []:
                        sock.close()
            return self._run_worker(own)
        except SettingsError as error:
            # One write: the other workers write to the same stderr meanwhile.
            sys.stderr.write(f"mediagate: {error}\n")
            return SETTINGS_ERROR_STATUS
        except BaseException:  # the process ends here: say why, then exit
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def _reap(self) -> None:
        for slot in self._running():
            assert slot.pid is not None
            pid, wait_status = os.waitpid(slot.pid, os.WNOHANG)
            if pid == 0:
                continue
            status = os.waitstatus_to_exitcode(wait_status)
            slot.pid = None
            # Connections queued on its sockets are lost either way; closed, the
            # kernel sends new ones to the other workers until it is back.
            for sock in slot.sockets or []:
                sock.close()
            slot.sockets = None
            if self._stopping_since is not None:
                log.info("worker.stopped", worker=slot.index, pid=pid, status=status)
                # Killed by the SIGTERM itself: it was still starting, with nothing to drain.
                if status not in (0, -signal.SIGTERM):
                    self._status = self._status or 1  # a bad setting's 2 stays
            elif status == SETTINGS_ERROR_STATUS:
                log.error("worker.settings_error", worker=slot.index, pid=pid)
                self._status = SETTINGS_ERROR_STATUS
                self._stop("a worker reported a bad setting")
            else:
                self._schedule_restart(slot, pid, status)

    def _schedule_restart(self, slot: _Slot, pid: int | None, status: int) -> None:
        now = time.monotonic()
        slot.failures = 1 if now - slot.started_at >= STABLE_AFTER else slot.failures + 1
        delay = min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (slot.failures - 1))
        slot.restart_at = now + delay
        # A negative status is the signal that ended it.
        log.warning(
            "worker.died", worker=slot.index, pid=pid, status=status, restart_in_seconds=delay
        )

    def _restart_due(self, signal_mask: set[int | signal.Signals]) -> None:
        if self._stopping_since is not None:
            return
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                try:
                    slot.sockets = self._listen()
                except SettingsError as error:  # the port was taken meanwhile
                    log.error("worker.cannot_listen", worker=slot.index, error=str(error))
                    self._schedule_restart(slot, None, SETTINGS_ERROR_STATUS)
                    continue
                self._start(slot, signal_mask)

    def _stop(self, reason: str) -> None:
        if self._stopping_since is not None:
            return
        self._stopping_since = time.monotonic()
        # The workers stop accepting as they get SIGTERM; with the supervisor's
        # copies closed too, the port refuses new connections once they have.
        self._close_sockets()
        running = self._running()
        log.info("supervisor.stopping", reason=reason, workers=len(running))
        for slot in running:
            _send(slot, signal.SIGTERM)

    def _close_sockets(self) -> None:
        for slot in self._slots:
            for sock in slot.sockets or []:
                sock.close()
            slot.sockets = None

    def _kill_if_overdue(self) -> None:
        if self._stopping_since is None:
            return
        if time.monotonic() - self._stopping_since < self._kill_after:
            return
        for slot in self._running():
            log.error("worker.killed", worker=slot.index, pid=slot.pid)
            _send(slot, signal.SIGKILL)
        self._status = 1
        self._kill_after = float("inf")  # once; the reaping ends the loop


def _send(slot: _Slot, signum: signal.Signals) -> None:
    if slot.pid is not None:  # never os.kill(0, ...): that is the whole process group
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.pid, signum)
