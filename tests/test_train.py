"""The training loop end to end: outputs, exact resume after a crash, NaN handling."""
import glob
import logging
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ebm_vision import train
from ebm_vision.data import input_pipeline
from ebm_vision.objectives import corruptions

pytestmark = pytest.mark.slow  # End-to-end runs.


def saved_state(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def saved_params(workdir, step):
  return saved_state(workdir, step)["params"]


def test_run_writes_checkpoints_images_and_metrics(tiny_config, tmp_path):
  tiny_config.eval_tasks = tuple(corruptions.CORRUPTIONS)
  scalars = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  for key in ("train/loss", "train/loss_per_step_2", "train/step_size_1", "train/grad_norm",
              "train/learning_rate", "train/images_per_sec"):
    assert np.isfinite(scalars[key]), key
  for task in corruptions.CORRUPTIONS:
    assert len(glob.glob(str(tmp_path / "restorations" / f"{task}_step_*.png"))) == 2
    for key in ("energy_clean", "energy_corrupted", "energy_restored_2", "psnr_corrupted",
                "psnr_restored_2", "ssim_corrupted", "ssim_restored_1", "mse_restored_2"):
      assert np.isfinite(scalars[f"eval/{task}/{key}"]), (task, key)


class CrashAfter:
  """Wraps a data iterator and raises after `n` batches, like a preempted job."""

  def __init__(self, iterator, n):
    self.iterator, self.n = iterator, n

  def __next__(self):
    if self.n == 0:
      raise KeyboardInterrupt("simulated preemption")
    self.n -= 1
    return next(self.iterator)

  def peek(self):
    return self.iterator.peek()

  def save(self, path):
    self.iterator.save(path)


@pytest.mark.parametrize("options", [False, True])
def test_resumed_run_equals_uninterrupted_run(tiny_config, tmp_path, monkeypatch, options):
  c = tiny_config
  c.restore.init_step_size_from_data = options  # Peeks at the first batch.
  c.ema_decay = 0.9 if options else 0.0  # The EMA is part of the saved state.
  c.num_train_steps, c.checkpoint_every_steps, c.max_checkpoints_to_keep = 6, 2, 2
  c.data.checkpoint_iterator = True  # Exact data order after a resume.
  train.train_and_evaluate(c, str(tmp_path / "straight"))

  make_iterator = input_pipeline.create_train_iterator
  monkeypatch.setattr(input_pipeline, "create_train_iterator",
                      lambda *a, **kw: CrashAfter(make_iterator(*a, **kw), 5))
  with pytest.raises(KeyboardInterrupt):  # Crashes while fetching step 6's batch.
    train.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["2", "4"]
  monkeypatch.setattr(input_pipeline, "create_train_iterator", make_iterator)
  train.train_and_evaluate(c, str(tmp_path / "resumed"))  # Resumes at step 4.

  # Iterator states follow the checkpoints Orbax keeps.
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["4", "6"]
  assert sorted(os.listdir(tmp_path / "resumed" / "data_state")) == ["4", "6"]
  straight, resumed = saved_state(tmp_path / "straight", 6), saved_state(tmp_path / "resumed", 6)
  assert ("ema_params" in straight) == options
  chex.assert_trees_all_equal(straight, resumed)


def test_step_sizes_from_data_replace_the_configured_one(tiny_config, tmp_path):
  c = tiny_config
  c.num_train_steps, c.restore.learn_step_size = 1, False
  c.restore.init_step_size_from_data = True
  scalars = train.train_and_evaluate(c, str(tmp_path))
  alphas = [scalars[f"train/step_size_{k}"] for k in (1, 2)]
  assert alphas[0] == alphas[1] and abs(alphas[0] - c.restore.init_step_size) > 0.1


def test_step_limit_stops_on_the_full_schedules_path(tiny_config, tmp_path, caplog):
  """stop_after_steps=3 of a 6-step schedule saves what a straight run has at step 3 (its
  warm-up and cosine span 6 steps, not 3); a relaunch trains nothing."""
  c = tiny_config
  c.num_train_steps, c.checkpoint_every_steps, c.optimizer.warmup_steps = 6, 3, 2
  train.train_and_evaluate(c, str(tmp_path / "straight"))
  c.stop_after_steps = 3
  train.train_and_evaluate(c, str(tmp_path / "limited"))
  assert sorted(os.listdir(tmp_path / "limited" / "checkpoints")) == ["3"]
  straight, limited = saved_params(tmp_path / "straight", 3), saved_params(tmp_path / "limited", 3)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(limited)):
    np.testing.assert_array_equal(a, b)
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(c, str(tmp_path / "limited"))
  assert "Step limit 3 reached already" in caplog.text
  assert sorted(os.listdir(tmp_path / "limited" / "checkpoints")) == ["3"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tiny_config, tmp_path):
  c = tiny_config
  train.train_and_evaluate(c, str(tmp_path))  # Good checkpoints at steps 2 and 4.
  c.num_train_steps = 8
  c.optimizer.learning_rate_per_256 = 1e30  # Blows the parameters up at step 5.
  with pytest.raises(FloatingPointError, match=r"step [56]; last good checkpoint: step 4 in "):
    train.train_and_evaluate(c, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(saved_params(tmp_path, 4)))


def test_written_scalars_are_not_changed_afterwards(tiny_config, tmp_path, monkeypatch):
  """clu's asynchronous writer reads a dict after write_scalars returns: the loop must not
  add to it later (it once added the held-out metrics: 'dictionary changed size')."""
  from ebm_vision.run import loop  # pylint: disable=g-import-not-at-top
  written, create = [], loop.metric_writers.create_default_writer

  def recording_writer(*args, **kwargs):
    writer = create(*args, **kwargs)
    write = writer.write_scalars

    def write_scalars(step, scalars):
      written.append((scalars, dict(scalars)))
      write(step, scalars)
    writer.write_scalars = write_scalars
    return writer

  monkeypatch.setattr(loop.metric_writers, "create_default_writer", recording_writer)
  scalars = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert "eval/mask/mse_corrupted" in scalars and len(written) >= 2
  for later, when_written in written:
    assert later == when_written
