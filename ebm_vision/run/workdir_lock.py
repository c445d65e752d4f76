"""One run per workdir: an exclusive lock held for the life of the run.

A second trainer on the same workdir (a double-submitted job, a relaunch while the old
process still runs) would write the same checkpoints. On a local or network file system
the lock is `flock` on `<workdir>/run.lock`, which the kernel releases when the holder
exits in any way (kill -9 included), so a dead run never blocks the next one; the file
names the holder (host, PID, start time) for the error message. On a bucket (gs://),
where there is no flock, the file itself is the lock and carries a heartbeat that the
run refreshes at every checkpoint: a lock whose holder is a dead PID on this host, or
whose heartbeat is older than `stale_after_seconds`, is reported and taken over.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

from absl import logging

from ebm_vision.run import paths
from ebm_vision.run.errors import WorkdirInUse

LOCK_FILE = "run.lock"


def _holder() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "heartbeat": time.time()}


def _describe(info: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
  return f"PID {info.get('pid')} on {info.get('host')} (started {started})"


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (OSError, TypeError, ValueError):
    return False
  return True


class WorkdirLock:
  """`acquire()` or raise WorkdirInUse naming the holder; `release()` at the end of the run."""

  def __init__(self, workdir: str, stale_after_seconds: float = 900.):
    self.path = paths.as_path(workdir) / LOCK_FILE
    self.stale_after_seconds = stale_after_seconds
    self._fd: Optional[int] = None
    self._info: Optional[dict] = None

  @property
  def is_local(self) -> bool:
    return "://" not in os.fspath(self.path)

  def acquire(self) -> "WorkdirLock":
    previous = self._read()
    if self.is_local:
      fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        os.close(fd)
        raise WorkdirInUse(self._in_use_message(self._read() or previous)) from None
      self._fd = fd
    elif previous and not self._is_stale(previous):
      raise WorkdirInUse(self._in_use_message(previous))
    if previous:
      logging.warning("Took over the lock of a run that ended without releasing it: %s.",
                      _describe(previous))
    self._info = _holder()
    self._write(self._info)
    return self

  def heartbeat(self) -> None:
    """Refreshes the heartbeat of a bucket lock (local locks need none)."""
    if self._info is not None and not self.is_local:
      self._info["heartbeat"] = time.time()
      self._write(self._info)

  def release(self) -> None:
    """Empties the lock file and lets go of the lock; the file itself stays (see flock)."""
    if self._info is None:
      return
    if self.is_local:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)
      self._fd = None
    else:
      self.path.unlink(missing_ok=True)
    self._info = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

  def _in_use_message(self, info: Optional[dict]) -> str:
    holder = _describe(info) if info else "another process"
    return (f"--workdir={os.fspath(self.path.parent)!r} is in use by {holder}: wait for it "
            f"to finish, stop it, or use another workdir (lock: {os.fspath(self.path)})")

  def _is_stale(self, info: dict) -> bool:
    if info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
      return True
    return time.time() - info.get("heartbeat", 0) > self.stale_after_seconds

  def _read(self) -> Optional[dict]:
    try:
      text = self.path.read_text()
    except (FileNotFoundError, OSError):
      return None
    try:
      return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
      return None

  def _write(self, info: dict) -> None:
    text = json.dumps(info)
    if self.is_local:
      os.ftruncate(self._fd, 0)
      os.pwrite(self._fd, text.encode(), 0)
      os.fsync(self._fd)
    else:
      self.path.write_text(text)
