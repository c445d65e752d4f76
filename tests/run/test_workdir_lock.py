"""One run per workdir: the lock, its holder in the message, stale locks, two real processes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ebm_vision.run import workdir_lock
from ebm_vision.run.errors import WorkdirInUse
from subprocesses import REPO, start_main


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(WorkdirInUse, match=f"in use by PID {os.getpid()} on "
                                           f"{socket.gethostname()}"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  with workdir_lock.WorkdirLock(str(tmp_path)):  # Released: free again.
    pass
  assert (tmp_path / workdir_lock.LOCK_FILE).read_text() == ""


def test_the_lock_of_a_killed_process_is_reported_and_taken_over(tmp_path, caplog):
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; sys.path.insert(0, sys.argv[1]);"
      "from ebm_vision.run import workdir_lock;"
      "workdir_lock.WorkdirLock(sys.argv[2]).acquire(); print('held', flush=True);"
      "time.sleep(600)"), REPO, str(tmp_path)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(WorkdirInUse, match=f"PID {holder.pid}"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with caplog.at_level("WARNING"):
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert f"PID {holder.pid}" in caplog.text  # The stale holder is named.
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  lock.release()


def test_bucket_lock_goes_stale_with_its_heartbeat(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock.WorkdirLock, "is_local", property(lambda self: False))
  first = workdir_lock.WorkdirLock(str(tmp_path), stale_after_seconds=60).acquire()
  info = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  info.update(host="another-host", heartbeat=time.time())
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(info))
  with pytest.raises(WorkdirInUse, match="another-host"):
    workdir_lock.WorkdirLock(str(tmp_path), stale_after_seconds=60).acquire()
  info["heartbeat"] = time.time() - 120  # No heartbeat for 2 minutes: stale.
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(info))
  workdir_lock.WorkdirLock(str(tmp_path), stale_after_seconds=60).acquire().release()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
  del first


@pytest.mark.slow
def test_a_second_trainer_on_the_same_workdir_exits_at_once(tmp_path):
  workdir = tmp_path / "run"
  first = start_main(workdir, tmp_path / "first.log", "--config.num_train_steps=100000",
                     "--config.log_every_steps=1", num_devices=1)
  try:
    deadline = time.monotonic() + 300
    while "train/loss" not in (tmp_path / "first.log").read_text():
      assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.5)
    second = start_main(workdir, tmp_path / "second.log", num_devices=1)
    assert second.wait(timeout=300) == 1
    last = (tmp_path / "second.log").read_text().strip().splitlines()[-1]
    assert last.startswith(f"ebm-vision: --workdir='{workdir}' is in use by PID {first.pid} on ")
    assert first.poll() is None  # The first run goes on.
  finally:
    first.kill()
    first.wait()
