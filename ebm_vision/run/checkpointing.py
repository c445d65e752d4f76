"""Orbax checkpoints of the train state: save, watch the save, resume from the latest."""
from __future__ import annotations

import os
import shutil
from typing import Optional

import flax
import jax
import orbax.checkpoint as ocp
from absl import logging

from ebm_vision.run import errors, optimizer, paths


def create_manager(workdir: str, config) -> ocp.CheckpointManager:
  """A manager of `workdir`/checkpoints keeping the newest `max_checkpoints_to_keep`.

  It saves every `checkpoint_every_steps` steps and at a preemption notice.
  """
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.max_checkpoints_to_keep,
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(config.checkpoint_every_steps),
          policies.PreemptionCheckpointingPolicy()]),
      enable_async_checkpointing=config.async_checkpointing)
  return ocp.CheckpointManager(paths.as_path(workdir) / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, step: int, state: dict, *, force: bool = False
         ) -> bool:
  """Saves `state` at `step` if the manager's policy (or `force`) says so."""
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                      force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state) -> Optional[dict]:
  """The latest saved state, laid out as `abstract_state` (shapes, dtypes, shardings)."""
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"]


def abstract_like(state, shardings) -> dict:
  """ShapeDtypeStructs of `state` (arrays or ShapeDtypeStructs) with `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def item_tree(item_dir) -> dict:
  """The tree of array metadata (shapes, dtypes) of a checkpoint item folder, e.g.
  '<step>/state'. Read through the item's handler: a Checkpointer would also look for,
  and warn about, step-level metadata that lives one folder up."""
  return ocp.PyTreeCheckpointHandler().metadata(paths.as_path(item_dir)).tree


def check_param_shapes(manager: ocp.CheckpointManager, abstract_params) -> None:
  """Raises CheckpointError naming the first parameter whose shape in the latest
  checkpoint differs from the model's (or that only one of them has)."""
  step = manager.latest_step()
  state_dir = paths.as_path(manager.directory) / str(step) / "state"
  saved = item_tree(state_dir)["params"]
  saved = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(saved, sep="/").items()}
  model = {k: tuple(v.shape)
           for k, v in flax.traverse_util.flatten_dict(abstract_params, sep="/").items()}
  where = f"checkpoint {paths.as_path(manager.directory) / str(step)}"
  by_depth = lambda name: (optimizer.layer_index(name.split("/"), depth=10**6), name)
  for name in sorted(set(saved) | set(model), key=by_depth):  # Input side first.
    if saved.get(name) != model.get(name):
      shapes = (f"shape {saved[name]} in the {where}, {model[name]} in the model"
                if name in saved and name in model else
                f"in the {where} but not in the model" if name in saved else
                f"in the model but not in the {where}")
      raise errors.CheckpointError(
          f"the checkpoint does not fit the model: parameter {name} has {shapes}. Resume "
          "with the config the run was started with, or use a fresh --workdir")


def describe_step(step: Optional[int]) -> str:
  return "no checkpoint was written yet" if step is None else f"step {step}"


class SaveWatch:
  """Surfaces a failed asynchronous save as soon as it finishes, not at the next save.

  Orbax reports the failure of a background write only when it is next waited on (and
  lists the failed step among its steps until restarted), so `check()`, called every
  step, waits on a save once its write has ended. It also warns before a save when the
  disk has less free space than the last checkpoint took.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager
    self.last_good = manager.latest_step()
    self._pending: Optional[int] = None
    self._last_size: Optional[int] = None

  def before_save(self) -> None:
    """Waits for the previous save (raising if it failed); warns when space runs short."""
    self.finish()
    directory = os.fspath(self.manager.directory)
    if self._last_size is None or "://" in directory:
      return
    free = shutil.disk_usage(directory).free
    if free < 1.2 * self._last_size:
      logging.warning("Only %.2f GB free under %s; the last checkpoint took %.2f GB.",
                      free / 1e9, directory, self._last_size / 1e9)

  def saved(self, step: int) -> None:
    """Records that a save of `step` started."""
    self._pending = step

  def check(self) -> None:
    """Raises CheckpointError if the pending save has ended in failure."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self.finish()

  def finish(self) -> None:
    """Waits for the pending save; raises CheckpointError if it failed."""
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # OSError; tensorstore's ValueError.
      raise errors.CheckpointError(
          f"checkpoint at step {step} failed: {reason(e)}; last good checkpoint: "
          f"{describe_step(self.last_good)} in {self.manager.directory}") from None
    self.last_good = step
    self._last_size = directory_size(paths.as_path(self.manager.directory) / str(step))


def reason(error: Exception) -> str:
  """The OS-level cause of a failed write, e.g. 'No space left on device'."""
  text = str(error)
  for known in ("No space left on device", "Permission denied", "Read-only file system",
                "Disk quota exceeded"):
    if known in text:
      return known
  return text.splitlines()[0][:200] if text else type(error).__name__


def directory_size(path) -> Optional[int]:
  """Bytes under a local folder; None for buckets (not measured)."""
  path = os.fspath(path)
  if "://" in path or not os.path.isdir(path):
    return None
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)
