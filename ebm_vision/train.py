"""Energy-inspired pretraining: the training loop.

mesh → input → model and optimizer → sharded state (fresh or resumed) → jitted
step → loop with metrics, restoration grids and checkpoints.
"""
from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from ebm_vision import checkpointing, config_validation, frozen_eval, image_grid, input_pipeline
from ebm_vision import mesh as mesh_lib
from ebm_vision import partitioning, paths, preemption, pretrained, pretraining
from ebm_vision.models import create_vit
from ebm_vision.optimizer import pretraining_optimizer


def first_non_finite(first_step: int, *series: list):
  """The step number of the first non-finite value in any of the per-step `series`, or None."""
  for i, values in enumerate(zip(*jax.device_get(series))):
    if not np.all(np.isfinite(values)):
      return first_step + i
  return None


def save_checkpoint(manager, step: int, state: dict, train_iter, config, workdir: str,
                    force: bool) -> None:
  """Saves `state` if the manager's policy (or `force`) says so, with the data iterator's
  state when `data.checkpoint_iterator`; prunes iterator states of deleted checkpoints."""
  if checkpointing.save(manager, step, state, force=force) and config.data.checkpoint_iterator:
    train_iter.save(input_pipeline.iterator_state_path(workdir, step, jax.process_index()))
    input_pipeline.prune_iterator_states(workdir, [*manager.all_steps(), step])


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


IMAGE_KEYS = ("clean", "corrupted", "region", "trajectory")


def task_corruption(corruption_config, task: str):
  """`corruption_config` with its task replaced by `task` (options kept)."""
  c = corruption_config.copy_and_resolve_references()
  c.name = task
  return c


def restoration_diagnostics_fn(model, config, task: str, mesh):
  """jitted (params, images, rng) -> `pretraining.restoration_diagnostics` of `task`,
  replicated, so that every process can fetch the images and scalars."""
  return partitioning.jit(functools.partial(
      pretraining.restoration_diagnostics, model=model, config=config,
      corruption_config=task_corruption(config.corruption, task)), mesh,
      out_shardings=mesh_lib.replicated(mesh))


def write_restorations(workdir: str, step: int, task: str, diag: dict, config, writer) -> dict:
  """Writes the task's restoration grid (PNG and TensorBoard); returns its eval scalars."""
  diag = jax.device_get(diag)
  grid = image_grid.restoration_grid(diag, config.data.pixel_mean, config.data.pixel_std)
  image_grid.save_png(paths.as_path(workdir) / "restorations" / f"{task}_step_{step:08d}.png",
                      grid)
  writer.write_images(step, {f"restorations/{task}": grid[None]})
  return step_metrics({k: v for k, v in diag.items() if k not in IMAGE_KEYS}, f"eval/{task}/")


def train_and_evaluate(config, workdir: str) -> dict:
  """Pretrains as `config` says, resuming from `workdir` if it holds checkpoints.

  Returns the last logged scalars (for tests and scripts).
  """
  # ---------------------------------------------------------------- set-up
  config_validation.validate_pretraining(config, jax.device_count())
  config_validation.check_workdir(workdir)
  input_pipeline.hide_accelerators_from_tf()
  mesh = mesh_lib.create_mesh(config.mesh)
  replicated = mesh_lib.replicated(mesh)
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_chief, asynchronous=True)
  if is_chief:
    pretrained.save_run_config(workdir, config)

  # ---------------------------------------------------------- model, optimizer
  model = create_vit(config.model)
  tx, schedule = pretraining_optimizer(config)
  init, state_sharding, train_step = pretraining.sharded_train_step(model, config, tx,
                                                                    schedule, mesh)
  abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))

  # ----------------------------------------------------- fresh or resumed state
  manager = checkpointing.create_manager(workdir, config)
  state = checkpointing.restore_latest(
      manager, checkpointing.abstract_like(abstract_state, state_sharding))
  if state is None:
    state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
    logging.info("Initialized a new run in %s", workdir)
  start_step = int(state["step"])
  if start_step:
    logging.info("Resumed from the checkpoint of step %d", start_step)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]["model"]))
  logging.info("ViT parameters: %.2fM", num_params / 1e6)

  # ------------------------------------------------------------------- input
  train_iter = input_pipeline.create_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      start_step=start_step, workdir=workdir)
  grid_images = jax.device_put(
      input_pipeline.eval_images(config.data, config.num_grid_images), replicated)
  knn_every = config.knn_monitor.every_steps
  knn_monitor = frozen_eval.KnnMonitor(config, model) if knn_every else None

  # ------------------------------------------------------------- jitted steps
  diagnostics = {task: restoration_diagnostics_fn(model, config, task, mesh)
                 for task in config.eval_tasks}
  grid_rng = jax.random.PRNGKey(config.seed + 1)  # Same corruptions every time.

  # -------------------------------------------------------------------- loop
  progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=writer,
      every_steps=config.log_every_steps)
  pending_losses, pending_grad_norms, pending_from = [], [], start_step + 1
  scalars, metrics = {}, None
  timer_step, timer = start_step, time.perf_counter()
  budget_start = None
  with preemption.PreemptionWatch(manager) as watch:
    for step in range(start_step + 1, config.num_train_steps + 1):
      batch = mesh_lib.global_batch(next(train_iter), mesh)
      state, metrics = train_step(state, batch)
      pending_losses.append(metrics["loss"])
      pending_grad_norms.append(metrics["grad_norm"])
      progress(step)
      out_of_time = False
      if config.time_budget_seconds:  # Timed on finished steps, not on dispatched ones.
        jax.block_until_ready(metrics["loss"])
        if budget_start is None:  # The clock starts after the compiling first step.
          budget_start = time.perf_counter()
        out_of_time = time.perf_counter() - budget_start >= config.time_budget_seconds
      stop = watch.stop_requested(step) or out_of_time
      is_last = step == config.num_train_steps
      saving = is_last or stop or manager.should_save(step)
      if saving or step % config.log_every_steps == 0:
        bad = first_non_finite(pending_from, pending_losses, pending_grad_norms)
        if bad is not None:
          manager.wait_until_finished()
          raise FloatingPointError(
              f"non-finite loss or gradient at step {bad}; the last good checkpoint is "
              f"step {manager.latest_step()} in {workdir}")
        loss_mean = float(np.mean(jax.device_get(pending_losses)))
        pending_losses, pending_grad_norms, pending_from = [], [], step + 1

      if step % config.log_every_steps == 0 or is_last:
        elapsed = time.perf_counter() - timer
        scalars = step_metrics(metrics, "train/")
        scalars["train/loss"] = loss_mean
        scalars["train/images_per_sec"] = (step - timer_step) * config.batch_size / elapsed
        writer.write_scalars(step, scalars)
        timer_step, timer = step, time.perf_counter()

      if step % config.image_every_steps == 0 or is_last:
        for task, diagnose in diagnostics.items():
          diag = diagnose(state["params"], grid_images, grid_rng)
          if is_chief:
            eval_scalars = write_restorations(workdir, step, task, diag, config, writer)
            writer.write_scalars(step, eval_scalars)
            scalars.update(eval_scalars)

      if knn_monitor and (step % knn_every == 0 or is_last):
        top1 = knn_monitor(state["params"]["model"])
        writer.write_scalars(step, {"knn/top1": top1})
        scalars["knn/top1"] = top1

      if saving:
        save_checkpoint(manager, step, state, train_iter, config, workdir, force=is_last or stop)
      if stop:
        logging.warning("Stopped (%s) after saving step %d in %s; the next launch resumes "
                        "from it.", "time budget" if out_of_time else "preemption", step, workdir)
        break

  manager.wait_until_finished()
  manager.close()
  writer.flush()
  return scalars
