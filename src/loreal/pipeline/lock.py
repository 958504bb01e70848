"""One run per output folder at a time: the lock ``train.py`` and the drivers take, and who holds a folder.

The lock is ``fcntl.flock`` on ``<output_dir>/loreal_run.lock``, whose text records the owner (host, pid,
start time, command, SLURM job). The kernel drops a flock when its holder dies, so on this host a record
whose flock is free is a stale lock (a killed run's) and is taken over. Across hosts flock is shared only by
some network filesystems (NFSv4, Lustre mounted with ``flock``): a record left by another host whose flock
looks free may still be a live run, so it is refused with the way out, unless its SLURM job is known to have
ended. NFS clients emulate flock with POSIX locks, which a process drops when it closes any descriptor of
the file: the holder reads and writes its record through its own descriptor only, and a driver never looks
(``holder``) at a folder it holds itself. A driver that submits jobs records their ids in
``<output_dir>/loreal_job.json``, so that a re-run does not submit a folder again while its job is queued or
running.

A runner (``loreal.pipeline.run_stage``) holds the lock itself, from before it sets an interrupted attempt's
log aside until its ``train.py`` exits, and passes it down (``LOREAL_RUN_LOCK_FD``): that ``train.py``
recognises its launcher's lock instead of refusing it.
"""
from __future__ import annotations

import atexit
import fcntl
import functools
import getpass
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from ..errors import RunLockedError
from .stage import JOB_FILE, LOCK_FILE, MARKER

ENV_FD = "LOREAL_RUN_LOCK_FD"
T = TypeVar("T")
# SLURM job states after which the job no longer runs (squeue shows them for a few minutes after the end).
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT"}


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def this_host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _read_fd(fd: int) -> dict:
    """A lock record read through the descriptor that holds it (see the NFS note above)."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    try:
        data = json.loads(b"".join(chunks) or b"{}")
    except ValueError:  # caught half-written
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):  # absent, or caught half-written
        return {}
    return data if isinstance(data, dict) else {}


class JobQueue:
    """This user's SLURM jobs as ``squeue`` lists them, read at most once every ``ttl`` seconds.

    ``alive`` is None when the scheduler cannot be asked (no ``squeue`` here, or it failed).
    """

    def __init__(self, command: Sequence[str] = ("squeue",), ttl: float = 10.0):
        self.command, self.ttl = list(command), ttl
        self._read_at, self._states = -float("inf"), None

    def states(self) -> dict[str, str] | None:
        if time.monotonic() - self._read_at > self.ttl:
            self._read_at, self._states = time.monotonic(), self._query()
        return self._states

    def _query(self) -> dict[str, str] | None:
        try:
            proc = subprocess.run([*self.command, "--noheader", "--user", getpass.getuser(), "--format", "%i %T"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        if proc.returncode != 0:
            return None
        return dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split(None, 1)) == 2)

    def alive(self, job_id: str) -> bool | None:
        states = self.states()
        if states is None:
            return None
        state = states.get(str(job_id))
        return state is not None and state.strip().split()[0] not in ENDED


@dataclass(frozen=True)
class Holder:
    """Who runs a folder: a lock's owner (``kind`` "lock") or a submitted job (``kind`` "job").
    ``live``: True when known to run, None when this host cannot tell."""

    output_dir: str
    kind: str
    record: dict
    live: bool | None

    def describe(self) -> str:
        r = self.record
        if self.kind == "job":
            return f"{r.get('cluster', 'slurm')} job {r.get('job_id')} (submitted {r.get('submitted', '?')})"
        who = f"pid {r.get('pid', '?')}"
        if r.get("train_pid"):
            who = f"train.py pid {r['train_pid']} (started by pid {r.get('pid', '?')})"
        job = f", SLURM job {r['slurm_job']}" if r.get("slurm_job") else ""
        return f"{who} on host {r.get('host', '?')}{job} since {r.get('started', '?')}"

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, JOB_FILE if self.kind == "job" else LOCK_FILE)

    def message(self) -> str:
        """Who holds the folder and what to do, for errors and driver reports."""
        if self.live:
            return (f"{self.output_dir} is being run by {self.describe()}: one run per output folder at a time. Wait "
                    f"for it to finish (`loreal pipeline` and `loreal reproduce` wait by themselves), or give this "
                    f"run another --output-dir")
        if self.kind == "job":
            return (f"{self.output_dir} was submitted as {self.describe()}, and the scheduler cannot be asked from "
                    f"here (no squeue): it is taken as still running. If it is not (squeue / sacct on the cluster "
                    f"say so), delete {self.path} and run again (for a whole grid: "
                    f"find OUTPUT -name {JOB_FILE} -delete)")
        return (f"{self.output_dir} is locked by {self.describe()}, which this host cannot check. If that run is still "
                f"going, wait for it or use another --output-dir; if it is gone (killed, node lost), delete "
                f"{self.path} and run again")


def _lock_alive(record: dict, flock_free: bool | None, jobs: JobQueue | None) -> bool | None:
    """Whether a lock record's owner runs. ``flock_free``: the kernel lock was free (None: no flock here)."""
    if not record:
        return False
    if record.get("host") == this_host():
        if flock_free:  # the kernel would hold it for a live owner on this host
            return False
        return _pid_alive(int(record.get("train_pid") or record.get("pid") or 0) or -1)
    if record.get("slurm_job"):  # another host: its SLURM job tells whether it still runs
        return (jobs or JobQueue()).alive(record["slurm_job"])
    return None


def _job_alive(record: dict, jobs: JobQueue | None) -> bool | None:
    if record.get("cluster", "slurm") == "slurm":
        return (jobs or JobQueue()).alive(record.get("job_id", ""))
    # submitit's debug/local executors: the jobs live in (or under) the driver that submitted them
    if record.get("host") != this_host():
        return None
    pid = int(record.get("driver_pid") or 0)
    return pid > 0 and pid != os.getpid() and _pid_alive(pid)


def holder(output_dir: str, jobs: JobQueue | None = None) -> Holder | None:
    """Who else runs ``output_dir`` now, or None if nobody does (a stale lock or an ended job count as nobody).
    A finished folder (completion marker) is nobody's."""
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        pass
    else:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by the close below
                free: bool | None = True
            except BlockingIOError:
                free = False
            except OSError:  # a filesystem without flock: the record alone
                free = None
            record = _read_fd(fd)
        finally:
            os.close(fd)
        live = True if free is False else _lock_alive(record, free, jobs)
        if live is not False:
            return Holder(output_dir, "lock", record, live)
    job = _read_json(os.path.join(output_dir, JOB_FILE))
    if job and not os.path.isfile(os.path.join(output_dir, MARKER)):
        live = _job_alive(job, jobs)
        if live is not False:
            return Holder(output_dir, "job", job, live)
    return None


class RunLock:
    """The held lock of one output folder; ``release`` (or leaving a ``with`` block) gives it up."""

    ATTEMPTS = 5  # a driver's look (``holder``) holds the flock shared for an instant: retry before refusing

    def __init__(self, output_dir: str, fd: int, record: dict, inherited: bool = False):
        self.output_dir, self.fd, self.record, self.inherited = output_dir, fd, record, inherited
        self.path = os.path.join(output_dir, LOCK_FILE)

    @classmethod
    def acquire(cls, output_dir: str, *, command: str = "", log: Callable[[str], None] = _warn,
                jobs: JobQueue | None = None) -> "RunLock":
        """Take the folder's lock, or raise ``RunLockedError`` (naming the owner and the fix) touching nothing.

        A stale lock (its owner died on this host, or its SLURM job ended) is taken over, saying so.
        """
        path = os.path.join(output_dir, LOCK_FILE)
        inherited = cls._inherited(output_dir)
        if inherited is not None:
            return inherited
        busy = 0
        while True:
            if not os.path.isdir(output_dir):
                os.makedirs(output_dir, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flock = True
            except BlockingIOError:
                os.close(fd)
                busy += 1
                if busy < cls.ATTEMPTS:
                    time.sleep(0.05)
                    continue
                raise RunLockedError(Holder(output_dir, "lock", _read_json(path), True).message(), True) from None
            except OSError:  # no flock on this filesystem: the record alone decides (not atomic)
                flock = False
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder released (removed) it between our open and flock: take the new file
                os.close(fd)
                continue
            old = _read_fd(fd)
            live = _lock_alive(old, flock or None, jobs)
            if live is not False:
                os.close(fd)
                raise RunLockedError(Holder(output_dir, "lock", old, live).message(), live)
            if old:
                log(f"{output_dir}: taking over the stale lock of {Holder(output_dir, 'lock', old, False).describe()}"
                    f", which no longer runs (killed or crashed)")
            record = {"host": this_host(), "pid": os.getpid(), "started": _now(), "command": command or
                      " ".join(sys.argv), **({"slurm_job": os.environ["SLURM_JOB_ID"]}
                                             if os.environ.get("SLURM_JOB_ID") else {})}
            lock = cls(output_dir, fd, record)
            lock.update()
            return lock

    @classmethod
    def _inherited(cls, output_dir: str) -> "RunLock | None":
        """The lock a runner passed to this process (its ``train.py``), if it is this folder's."""
        fd = os.environ.get(ENV_FD, "")
        if not fd.isdigit():
            return None
        try:
            mine, theirs = os.fstat(int(fd)), os.stat(os.path.join(output_dir, LOCK_FILE))
        except OSError:
            return None
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        return cls(output_dir, int(fd), _read_fd(int(fd)), inherited=True)

    def update(self, **fields) -> None:
        """Rewrite the owner record (e.g. with the pid of the ``train.py`` this runner started)."""
        self.record.update(fields)
        data = json.dumps(self.record, indent=1).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def child_env(self) -> dict[str, str]:
        """What a child ``train.py`` needs to recognise this lock (pass ``self.fd`` in ``pass_fds`` too)."""
        return {ENV_FD: str(self.fd)}

    def release(self) -> None:
        if self.fd < 0:
            return
        if not self.inherited:  # remove before unlocking; a waiter that opened the old file sees it is gone
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_process_lock: RunLock | None = None


def lock_run_folder(output_dir: str) -> RunLock | None:
    """``train.py``'s lock on its output folder, held until ``main`` returns (``releases_run_folder``) or the
    process exits.

    Re-entrant; rank 0 of a ``torchrun`` launch holds it for every rank. Raises ``RunLockedError`` when another
    live run holds the folder.
    """
    global _process_lock
    if not output_dir or int(os.environ.get("RANK", "0") or 0) != 0:
        return None
    if _process_lock is not None and _process_lock.fd >= 0:
        if os.path.realpath(_process_lock.output_dir) == os.path.realpath(output_dir):
            return _process_lock
        _process_lock.release()
    _process_lock = RunLock.acquire(output_dir)
    return _process_lock


@atexit.register
def _release_process_lock() -> None:
    if _process_lock is not None:
        _process_lock.release()


def releases_run_folder(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate ``train.py``'s ``main``: the folder ``lock_run_folder`` took is released when it returns or
    raises (a notebook's next run, or a driver, may then take it)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        finally:
            _release_process_lock()
    return wrapper


def record_job(output_dir: str, job_id: str, cluster: str = "slurm") -> None:
    """Record a submitted job beside its run's outputs, for a later driver to ask whether it still runs."""
    os.makedirs(output_dir, exist_ok=True)
    record = {"job_id": str(job_id), "cluster": cluster, "submitted": _now(), "host": this_host(),
              "driver_pid": os.getpid()}
    tmp = os.path.join(output_dir, f".{JOB_FILE}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(output_dir, JOB_FILE))
