"""SIGTERM to a running pretraining: checkpoint at the next step, clean exit, resume."""
import logging
import signal
import time

import pytest

from ebm_vision import train
from ebm_vision.run import checkpointing
from subprocesses import start_main

pytestmark = pytest.mark.slow  # End-to-end runs.


def wait_for(path, text: str, process, timeout: float = 300.) -> None:
  """Waits until the log at `path` contains `text`; fails if the process ends first."""
  deadline = time.monotonic() + timeout
  while text not in path.read_text():
    assert process.poll() is None, f"exited before {text!r}:\n{path.read_text()[-3000:]}"
    assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
    time.sleep(0.5)


def test_sigterm_checkpoints_and_the_next_launch_resumes(tiny_config, tmp_path, caplog):
  workdir, log = tmp_path / "run", tmp_path / "run.log"
  process = start_main(workdir, log, "--config.num_train_steps=100000",
                       "--config.checkpoint_every_steps=100000",
                       "--config.image_every_steps=100000", "--config.log_every_steps=1")
  wait_for(log, "train/loss", process)  # Training steps are running.
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
  assert "Stopped (preemption) after saving step" in log.read_text()
  step = checkpointing.create_manager(str(workdir), tiny_config).latest_step()
  assert step is not None and 1 <= step < 100000

  tiny_config.num_train_steps = step + 2
  tiny_config.checkpoint_every_steps = tiny_config.image_every_steps = 100000
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(tiny_config, str(workdir))
  assert f"Resumed from the checkpoint of step {step}" in caplog.text
  assert checkpointing.create_manager(str(workdir), tiny_config).all_steps() == [step, step + 2]


def test_time_budget_stops_with_a_checkpoint(tiny_config, tmp_path):
  tiny_config.num_train_steps = tiny_config.checkpoint_every_steps = 100000
  tiny_config.image_every_steps = 100000
  tiny_config.time_budget_seconds = 2.0
  start = time.monotonic()
  train.train_and_evaluate(tiny_config, str(tmp_path))
  step = checkpointing.create_manager(str(tmp_path), tiny_config).latest_step()
  assert step is not None and 1 < step < 100000
  assert time.monotonic() - start < 120
