"""Orbax checkpoints of the train state: save, and resume from the latest."""
from __future__ import annotations

from typing import Optional

import jax
import orbax.checkpoint as ocp

from ebm_vision.run import paths


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
