"""Checkpoint saves that fail, disks that fill up, checkpoints that do not fit the model."""
import collections
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from ebm_vision import train
from ebm_vision.run import checkpointing
from ebm_vision.run.errors import CheckpointError

ENOSPC = ("RESOURCE_EXHAUSTED: Error writing \"a/0\" in OCDBT database: Failed writing: "
          "\"/ckpt/d/73c2\": Failed to write 600429 bytes to file 4: No space left on device "
          "[os_error_code='28']")


def test_reason_names_the_os_error():
  assert checkpointing.reason(ValueError(ENOSPC)) == "No space left on device"
  assert checkpointing.reason(OSError("weird\nmore")) == "weird"


@pytest.mark.slow
def test_a_failed_save_stops_the_run_when_it_finishes(tiny_config, tmp_path, monkeypatch):
  """The save of step 4 fails in the background (as a full disk does); the run stops at
  the next step, naming the failure and the last good checkpoint, and writes no more."""
  real_save, real_wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
  failing = set()

  def save(self, step, *args, **kwargs):
    if step == 4:
      failing.add(step)  # Started, and will fail: nothing reaches the disk.
      return True
    return real_save(self, step, *args, **kwargs)

  def wait_until_finished(self):
    real_wait(self)
    if failing:
      failing.clear()
      raise ValueError(ENOSPC)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_until_finished)
  tiny_config.num_train_steps, tiny_config.checkpoint_every_steps = 10, 2
  with pytest.raises(CheckpointError) as error:
    train.train_and_evaluate(tiny_config, str(tmp_path))
  assert str(error.value).startswith(
      "checkpoint at step 4 failed: No space left on device; last good checkpoint: step 2 in ")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]  # Nothing after the failure.


def test_low_disk_space_is_warned_before_a_save(tmp_path, monkeypatch, caplog):
  manager = checkpointing.create_manager(str(tmp_path), collections.namedtuple(
      "C", "max_checkpoints_to_keep checkpoint_every_steps async_checkpointing")(3, 1, False))
  watch = checkpointing.SaveWatch(manager)
  checkpointing.save(manager, 1, {"x": np.ones(1000)})
  watch.saved(1)
  watch.finish()
  usage = collections.namedtuple("Usage", "total used free")
  monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda _: usage(10**6, 10**6, 100))
  with caplog.at_level("WARNING"):
    watch.before_save()
  assert "Only 0.00 GB free" in caplog.text and "the last checkpoint took" in caplog.text
