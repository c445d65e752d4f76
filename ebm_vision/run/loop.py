"""What every training entry point shares: set-up, fresh-or-resumed state, and the loop.

The loop runs the jitted step, logs, checks for non-finite values, checkpoints on the
manager's policy, stops at a preemption notice or a time budget, and calls the entry
point's own `evaluate(step, state, is_last)` for what it measures on the side.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from ebm_vision.data import input_pipeline
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run import (checkpointing, config_validation, errors, preemption, run_config,
                            workdir_lock)


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


PROGRESS_AFTER_STEPS = 3  # Steps after the (compiling) first one before progress and ETA show.


@dataclasses.dataclass
class Run:
  """What `setup` prepares for an entry point."""
  workdir: str
  mesh: jax.sharding.Mesh
  writer: metric_writers.MetricWriter
  is_chief: bool  # Process 0: writes logs, images and result files, and holds the lock.
  lock: Optional[workdir_lock.WorkdirLock] = None


def hold_workdir(workdir: str, is_chief: bool) -> Optional[workdir_lock.WorkdirLock]:
  """Process 0 takes the workdir's lock; with several processes, all learn whether it did
  and stop together if not."""
  lock, error = None, None
  if is_chief:
    try:
      lock = workdir_lock.WorkdirLock(workdir).acquire()
    except errors.WorkdirInUse as e:
      error = e
  if jax.process_count() > 1:
    held = multihost_utils.broadcast_one_to_all(np.asarray(error is None))
    if not held and error is None:
      error = errors.WorkdirInUse(f"--workdir={workdir!r} is in use (see process 0's log)")
  if error is not None:
    raise error
  return lock


def schedule_in_steps(config):
  """`config` with `num_epochs` and `optimizer.warmup_epochs`, when set, turned into
  `num_train_steps` and `optimizer.warmup_steps` for the train split's size and the
  batch (big_vision's `total_epochs`), so that a smaller batch trains as many epochs."""
  config_validation.check_schedule(config)
  if config.get("num_epochs") is None and config.optimizer.get("warmup_epochs") is None:
    return config
  if config.data.source != "tfds":
    raise config_validation.ConfigError(
        "config.num_epochs / optimizer.warmup_epochs need a data set of known size "
        "(data.source='tfds'); set num_train_steps and optimizer.warmup_steps")
  config = config.copy_and_resolve_references()
  steps_per_epoch = input_pipeline.split_size(config.data, config.data.train_split) / (
      config.batch_size)
  if config.get("num_epochs") is not None:
    config.num_train_steps = max(1, int(round(config.num_epochs * steps_per_epoch)))
  if config.optimizer.get("warmup_epochs") is not None:
    config.optimizer.warmup_steps = int(round(config.optimizer.warmup_epochs * steps_per_epoch))
  logging.info("%s epochs of %.1f steps: %d steps, %d of warm-up", config.get("num_epochs"),
               steps_per_epoch, config.num_train_steps, config.optimizer.warmup_steps)
  return config


@contextlib.contextmanager
def setup(config, workdir: str, validate: Callable[[object, int], None]):
  """Validates `config`, checks and locks `workdir`, builds the mesh and the writer.

  A context manager: the workdir's lock is released when the entry point ends.
  """
  validate(config, jax.device_count())
  config_validation.check_workdir(workdir)
  input_pipeline.hide_accelerators_from_tf()
  is_chief = jax.process_index() == 0
  lock = hold_workdir(workdir, is_chief)
  try:
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief,
                                                  asynchronous=True)
    yield Run(workdir, mesh_lib.create_mesh(config.mesh), writer, is_chief, lock)
  finally:
    if lock is not None:
      lock.release()


def startup_summary(run: Run, config, job: str, model, params, start_step: int,
                    split: str) -> str:
  """One paragraph of what a run is about to do (the full config is in config.json)."""
  num_params = sum(x.size for x in jax.tree.leaves(params))
  data = config.data
  size = (f"{input_pipeline.split_size(data, split):,} images" if data.source == "tfds"
          else "procedural")
  mesh = " × ".join(f"{name} {n}" for name, n in run.mesh.shape.items())
  devices = jax.devices()
  return (f"{job}: ViT {model.depth}×{model.width}, patch {model.patch_size} "
          f"({num_params / 1e6:.2f}M parameters); "
          f"data {data.name if data.source == 'tfds' else data.source} "
          f"{split} ({size}, {data.image_size}×{data.image_size}); {len(devices)} "
          f"{devices[0].platform} device(s) in {jax.process_count()} process(es), mesh {mesh}; "
          f"batch {config.batch_size}; steps {start_step} → {config.num_train_steps}; "
          f"workdir {run.workdir} (full config: config.json)")


def restore_or_init(run: Run, config, manager: ocp.CheckpointManager, init: Callable,
                    state_sharding):
  """The latest checkpoint of `manager` laid out as `state_sharding`, or `init(key(seed))`.

  Resuming first checks the config against the recorded one (`run_config.check_resume`)
  and the checkpoint's parameter shapes against the model's; the config is recorded
  once the state exists, so a run that fails here leaves the record as it was.
  """
  abstract = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  if manager.latest_step() is not None:
    run_config.check_resume(run.workdir, config)
    checkpointing.check_param_shapes(manager, abstract["params"])
  state = checkpointing.restore_latest(manager,
                                       checkpointing.abstract_like(abstract, state_sharding))
  if state is None:
    state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  else:
    logging.info("Resumed from the checkpoint of step %d", int(state["step"]))
  if run.is_chief:
    run_config.save(run.workdir, config)
  return state


def save_checkpoint(watch: checkpointing.SaveWatch, step: int, state: dict, train_iter, config,
                    workdir: str, force: bool) -> None:
  """Saves `state` if the manager's policy (or `force`) says so, with the data iterator's
  state when `data.checkpoint_iterator`; prunes iterator states of deleted checkpoints."""
  manager = watch.manager
  watch.before_save()
  if not checkpointing.save(manager, step, state, force=force):
    return
  watch.saved(step)
  if config.data.checkpoint_iterator:
    train_iter.save(input_pipeline.iterator_state_path(workdir, step, jax.process_index()))
    input_pipeline.prune_iterator_states(workdir, [*manager.all_steps(), step])


def train_loop(run: Run, config, manager: ocp.CheckpointManager, state: dict, step_fn,
               train_iter, *, watched=("loss",), evaluate: Optional[Callable] = None,
               time_budget_seconds: float = 0., stop_after_steps: int = 0) -> dict:
  """Steps from the state's step to `config.num_train_steps`; returns the last scalars.

  Args:
    step_fn: jitted (state, global batch) -> (state, metrics).
    watched: metrics whose non-finite value stops the run (FloatingPointError).
    A preemption notice ends the loop with errors.Preempted once its checkpoint is
    durable (main.py then exits at once, status 0).
    evaluate: (step, state, is_last) -> dict of scalars (already written) or None; runs
      after every step, before its checkpoint.
    time_budget_seconds: stop with a checkpoint after this much training, timed on
      finished steps from the end of the first (compiling) one; 0 = no limit.
    stop_after_steps: stop with a checkpoint after this step, before the end of the
      schedule (`config.num_train_steps`); 0 = no limit.
  """
  start_step = int(state["step"])
  if 0 < stop_after_steps <= start_step:
    logging.warning("Step limit %d reached already (checkpoint of step %d): nothing to train.",
                    stop_after_steps, start_step)
    return {}
  progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=run.writer,
      every_steps=config.log_every_steps)
  pending, pending_from = {k: [] for k in watched}, start_step + 1
  scalars = {}
  timer_step, timer, budget_start = start_step, time.perf_counter(), None
  saves = checkpointing.SaveWatch(manager)
  with preemption.PreemptionWatch(manager) as watch:
    for step in range(start_step + 1, config.num_train_steps + 1):
      state, metrics = step_fn(state, mesh_lib.global_batch(next(train_iter), run.mesh))
      for k in watched:
        pending[k].append(metrics[k])
      saves.check()
      if step > start_step + PROGRESS_AFTER_STEPS:  # The ETA leaves out compilation.
        progress(step)
      out_of_budget = step == stop_after_steps
      if time_budget_seconds:
        jax.block_until_ready(metrics["loss"])
        if budget_start is None:
          budget_start = time.perf_counter()
        out_of_budget |= time.perf_counter() - budget_start >= time_budget_seconds
      stop = watch.stop_requested(step) or out_of_budget
      is_last = step == config.num_train_steps
      saving = is_last or stop or manager.should_save(step)
      if saving or step % config.log_every_steps == 0 or is_last:
        bad = first_non_finite(pending_from, *pending.values())
        if bad is not None:
          saves.finish()
          raise FloatingPointError(
              f"non-finite {' or '.join(watched)} at step {bad}; last good checkpoint: "
              f"{checkpointing.describe_step(saves.last_good)} in {run.workdir}")
        loss_mean = float(np.mean(jax.device_get(pending["loss"])))
        pending, pending_from = {k: [] for k in watched}, step + 1
      if step % config.log_every_steps == 0 or is_last:
        scalars = step_metrics(metrics, "train/")
        scalars["train/loss"] = loss_mean
        scalars["train/images_per_sec"] = ((step - timer_step) * config.batch_size /
                                           (time.perf_counter() - timer))
        # A copy: the asynchronous writer reads it later, and evaluation adds to `scalars`.
        run.writer.write_scalars(step, dict(scalars))
        timer_step, timer = step, time.perf_counter()
      preempted = stop and not out_of_budget
      if evaluate is not None and not preempted:  # A preempted run saves at once.
        scalars.update(evaluate(step, state, is_last) or {})
      if saving:
        save_checkpoint(saves, step, state, train_iter, config, run.workdir,
                        force=is_last or stop)
        if run.lock is not None:
          run.lock.heartbeat()
      if stop:
        saves.finish()  # Durable before anything else.
        run.writer.flush()
        reason = ("preemption" if preempted else
                  "step limit" if step == stop_after_steps else "time budget")
        message = (f"Stopped ({reason}) after saving "
                   f"step {step} in {run.workdir}; the next launch resumes from it.")
        if preempted:
          raise errors.Preempted(message)
        logging.warning("%s", message)
        break
  saves.finish()
  run.writer.flush()
  return scalars
