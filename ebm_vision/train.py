"""Pretraining (energy or MAE, `config.method`): the entry point of main.py's mode 'pretrain'.

set-up → model and optimizer → sharded state (fresh or resumed) → input → jitted step →
the shared loop, with restoration grids and the kNN monitor on the side.
"""
from __future__ import annotations

import jax
from absl import logging

from ebm_vision.data import input_pipeline
from ebm_vision.models import create_vit
from ebm_vision.objectives import energy, train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run import checkpointing, config_validation, loop, paths, restorations
from ebm_vision.run.optimizer import pretraining_optimizer
from ebm_vision.transfer.knn_monitor import KnnMonitor


def summary_line(config, workdir: str, scalars: dict, seconds: float) -> str:
  """What a finished pretraining run did, in one line: steps, wall time, held-out MSE of
  its task before and after restoration, and where its restoration grids are."""
  minutes, secs = divmod(int(round(seconds)), 60)
  steps = loop.schedule_in_steps(config).num_train_steps
  line = f"ebm-vision: {steps} steps in {minutes} min {secs} s"
  task = config.corruption.name
  restored = sorted(k for k in scalars if k.startswith(f"eval/{task}/mse_restored_"))
  if f"eval/{task}/mse_corrupted" in scalars and restored:
    line += (f"; held-out {task} MSE {scalars[f'eval/{task}/mse_corrupted']:.3f} (corrupted) → "
             f"{scalars[restored[-1]]:.3f} (restored)")
  return line + f"; restoration grids in {paths.as_path(workdir) / 'restorations'}"


def train_and_evaluate(config, workdir: str) -> dict:
  """Pretrains as `config` says, resuming from `workdir` if it holds checkpoints.

  Returns the last logged scalars (for tests and scripts).
  """
  config = loop.schedule_in_steps(config)
  with loop.setup(config, workdir, config_validation.validate_pretraining) as run:
    # ---------------------------------------------------------- model, optimizer, state
    model = create_vit(config.model)
    tx, schedule = pretraining_optimizer(config)
    init, state_sharding, step_fn = train_step.sharded_train_step(model, config, tx, schedule,
                                                                  run.mesh)
    manager = checkpointing.create_manager(workdir, config)
    state = loop.restore_or_init(run, config, manager, init, state_sharding)
    job = f"Pretraining ({config.method}, task {config.corruption.name})"
    logging.info("%s", loop.startup_summary(run, config, job, model, state["params"]["model"],
                                            int(state["step"]), config.data.train_split))

    # ------------------------------------------------------------------- input
    train_iter = input_pipeline.create_train_iterator(
        config.data, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=int(state["step"]), workdir=workdir)
    if (config.method == "energy" and config.restore.init_step_size_from_data
        and int(state["step"]) == 0):
      state = train_step.data_step_sizes_fn(model, config, state_sharding, run.mesh)(
          state, mesh_lib.global_batch(train_iter.peek(), run.mesh))
      logging.info("Step sizes from the first batch: α = %.4g",
                   float(energy.step_sizes(state["params"]["restore"]["raw_step_size"])[0]))
    grid_images = jax.device_put(input_pipeline.eval_images(config.data, config.num_grid_images),
                                 mesh_lib.replicated(run.mesh))

    # ---------------------------------------------- held-out restorations, kNN monitor
    diagnostics = {task: restorations.diagnostics_fn(model, config, task, run.mesh)
                   for task in config.eval_tasks}
    grid_rng = jax.random.PRNGKey(config.seed + 1)  # Same corruptions every time.
    knn_every = config.knn_monitor.every_steps
    knn_monitor = KnnMonitor(config, model) if knn_every else None

    def evaluate(step, state, is_last):
      scalars, params = {}, train_step.evaluation_params(state)
      if step % config.image_every_steps == 0 or is_last:
        for task, diagnose in diagnostics.items():
          diag = diagnose(params, grid_images, grid_rng)
          if run.is_chief:
            scalars.update(restorations.write_restorations(workdir, step, task, diag, config,
                                                           run.writer))
      if knn_monitor and (step % knn_every == 0 or is_last):
        scalars["knn/top1"] = knn_monitor(params["model"])
      if scalars:
        run.writer.write_scalars(step, scalars)
      return scalars

    # -------------------------------------------------------------------- loop
    scalars = loop.train_loop(run, config, manager, state, step_fn, train_iter,
                              watched=("loss", "grad_norm"), evaluate=evaluate,
                              time_budget_seconds=config.time_budget_seconds,
                              stop_after_steps=config.stop_after_steps)
    manager.close()
    return scalars
