"""What every training entry point shares: set-up, fresh-or-resumed state, and the loop.

The loop runs the jitted step, logs, checks for non-finite values, checkpoints on the
manager's policy, stops at a preemption notice or a time budget, and calls the entry
point's own `evaluate(step, state, is_last)` for what it measures on the side.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions

from ebm_vision.data import input_pipeline
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run import checkpointing, config_validation, preemption
from ebm_vision.transfer import pretrained


def first_non_finite(first_step: int, *series: list):
  """The step number of the first non-finite value in any of the per-step `series`, or None."""
  for i, values in enumerate(zip(*jax.device_get(series))):
    if not np.all(np.isfinite(values)):
      return first_step + i
  return None


def step_metrics(metrics: dict, prefix: str = "") -> dict:
  """Flattens per-restoration-step arrays into scalars `name_1`, `name_2`, ..."""
  out = {}
  for name, value in jax.device_get(metrics).items():
    value = np.asarray(value)
    if value.ndim == 0:
      out[prefix + name] = float(value)
    else:
      out.update({f"{prefix}{name}_{k + 1}": float(v) for k, v in enumerate(value)})
  return out


@dataclasses.dataclass
class Run:
  """What `setup` prepares for an entry point."""
  workdir: str
  mesh: jax.sharding.Mesh
  writer: metric_writers.MetricWriter
  is_chief: bool  # Process 0: writes logs, images and result files.


def setup(config, workdir: str, validate: Callable[[object, int], None]) -> Run:
  """Validates `config`, checks `workdir`, builds the mesh and the writer, records the config."""
  validate(config, jax.device_count())
  config_validation.check_workdir(workdir)
  input_pipeline.hide_accelerators_from_tf()
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief,
                                                asynchronous=True)
  if is_chief:
    pretrained.save_run_config(workdir, config)
  return Run(workdir, mesh_lib.create_mesh(config.mesh), writer, is_chief)


def restore_or_init(manager: ocp.CheckpointManager, init: Callable, state_sharding, seed: int):
  """The latest checkpoint of `manager` laid out as `state_sharding`, or `init(key(seed))`."""
  abstract = jax.eval_shape(init, jax.random.PRNGKey(seed))
  state = checkpointing.restore_latest(manager,
                                       checkpointing.abstract_like(abstract, state_sharding))
  if state is None:
    return jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(seed))
  logging.info("Resumed from the checkpoint of step %d", int(state["step"]))
  return state


def save_checkpoint(manager, step: int, state: dict, train_iter, config, workdir: str,
                    force: bool) -> None:
  """Saves `state` if the manager's policy (or `force`) says so, with the data iterator's
  state when `data.checkpoint_iterator`; prunes iterator states of deleted checkpoints."""
  if checkpointing.save(manager, step, state, force=force) and config.data.checkpoint_iterator:
    train_iter.save(input_pipeline.iterator_state_path(workdir, step, jax.process_index()))
    input_pipeline.prune_iterator_states(workdir, [*manager.all_steps(), step])


def train_loop(run: Run, config, manager: ocp.CheckpointManager, state: dict, step_fn,
               train_iter, *, watched=("loss",), evaluate: Optional[Callable] = None,
               time_budget_seconds: float = 0.) -> dict:
  """Steps from the state's step to `config.num_train_steps`; returns the last scalars.

  Args:
    step_fn: jitted (state, global batch) -> (state, metrics).
    watched: metrics whose non-finite value stops the run (FloatingPointError).
    evaluate: (step, state, is_last) -> dict of scalars (already written) or None; runs
      after every step, before its checkpoint.
    time_budget_seconds: stop with a checkpoint after this much training, timed on
      finished steps from the end of the first (compiling) one; 0 = no limit.
  """
  start_step = int(state["step"])
  progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=run.writer,
      every_steps=config.log_every_steps)
  pending, pending_from = {k: [] for k in watched}, start_step + 1
  scalars = {}
  timer_step, timer, budget_start = start_step, time.perf_counter(), None
  with preemption.PreemptionWatch(manager) as watch:
    for step in range(start_step + 1, config.num_train_steps + 1):
      state, metrics = step_fn(state, mesh_lib.global_batch(next(train_iter), run.mesh))
      for k in watched:
        pending[k].append(metrics[k])
      progress(step)
      out_of_time = False
      if time_budget_seconds:
        jax.block_until_ready(metrics["loss"])
        if budget_start is None:
          budget_start = time.perf_counter()
        out_of_time = time.perf_counter() - budget_start >= time_budget_seconds
      stop = watch.stop_requested(step) or out_of_time
      is_last = step == config.num_train_steps
      saving = is_last or stop or manager.should_save(step)
      if saving or step % config.log_every_steps == 0 or is_last:
        bad = first_non_finite(pending_from, *pending.values())
        if bad is not None:
          manager.wait_until_finished()
          raise FloatingPointError(
              f"non-finite {' or '.join(watched)} at step {bad}; the last good checkpoint is "
              f"step {manager.latest_step()} in {run.workdir}")
        loss_mean = float(np.mean(jax.device_get(pending["loss"])))
        pending, pending_from = {k: [] for k in watched}, step + 1
      if step % config.log_every_steps == 0 or is_last:
        scalars = step_metrics(metrics, "train/")
        scalars["train/loss"] = loss_mean
        scalars["train/images_per_sec"] = ((step - timer_step) * config.batch_size /
                                           (time.perf_counter() - timer))
        run.writer.write_scalars(step, scalars)
        timer_step, timer = step, time.perf_counter()
      if evaluate is not None:
        scalars.update(evaluate(step, state, is_last) or {})
      if saving:
        save_checkpoint(manager, step, state, train_iter, config, run.workdir,
                        force=is_last or stop)
      if stop:
        logging.warning("Stopped (%s) after saving step %d in %s; the next launch resumes "
                        "from it.", "time budget" if out_of_time else "preemption", step,
                        run.workdir)
        break
  manager.wait_until_finished()
  run.writer.flush()
  return scalars
