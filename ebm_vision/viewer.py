"""Restoration viewer: what a checkpoint does with every pretext task.

  python main.py --config=<the run's config> --workdir=<the run's workdir> --mode=restore

For each task of `config.viewer.tasks`, writes `<workdir>/viewer/<task>_step_<step>.png`
(clean | corrupted | restored after each step) and PSNR / SSIM / energies per
restoration step, averaged over `viewer.num_images` held-out images, to
`<workdir>/viewer/metrics_step_<step>.json`; prints them as a table.
"""
from __future__ import annotations

import functools
import json

import jax
from absl import logging

from ebm_vision.data import input_pipeline
from ebm_vision.models import create_vit
from ebm_vision.objectives import train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning
from ebm_vision.run import checkpointing, config_validation, image_grid, paths, restorations
from ebm_vision.run.optimizer import pretraining_optimizer


def viewer_data_config(config):
  """`config.data` pointed at the viewer's images (same size and normalization)."""
  d = config.data.copy_and_resolve_references()
  v = config.viewer
  d.source, d.name, d.data_dir, d.eval_split = v.source, v.name, v.data_dir, v.split
  d.builder_dir = None
  return d


def optimizer_structure_config(config):
  """`config` with a two-step schedule: the optimizer state's structure (all the viewer
  needs to read a checkpoint) does not depend on the schedule, which may be in epochs of
  a data set this machine lacks."""
  config = config.copy_and_resolve_references()
  config.num_epochs, config.optimizer.warmup_epochs = None, None
  config.num_train_steps, config.optimizer.warmup_steps = 2, 1  # Warm-up 0 makes optax log.
  return config


def format_table(metrics: dict[str, dict[str, float]]) -> str:
  """One row per task: PSNR and SSIM of the corrupted input and after each step, and the
  energies when the method has them (MAE does not)."""
  first = next(iter(metrics.values()))
  steps = range(1, sum(k.startswith("psnr_restored_") for k in first) + 1)
  energies = "energy_clean" in first
  header = (["task", "PSNR in"] + [f"PSNR {k}" for k in steps] + ["SSIM in"] +
            [f"SSIM {k}" for k in steps] +
            (["E clean", "E corrupted", f"E restored {steps[-1]}"] if energies else []))
  rows = [header]
  for task, m in metrics.items():
    rows.append([task, f"{m['psnr_corrupted']:.2f}"] +
                [f"{m[f'psnr_restored_{k}']:.2f}" for k in steps] +
                [f"{m['ssim_corrupted']:.3f}"] + [f"{m[f'ssim_restored_{k}']:.3f}" for k in steps] +
                ([f"{m['energy_clean']:.4g}", f"{m['energy_corrupted']:.4g}",
                  f"{m[f'energy_restored_{steps[-1]}']:.4g}"] if energies else []))
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def restore_and_report(config, workdir: str) -> dict[str, dict[str, float]]:
  """Loads the latest checkpoint of `workdir` and reports every viewer task."""
  config_validation.validate_pretraining(config, jax.device_count())
  input_pipeline.hide_accelerators_from_tf()
  mesh = mesh_lib.create_mesh(config.mesh)
  replicated = mesh_lib.replicated(mesh)
  model = create_vit(config.model)
  tx, _ = pretraining_optimizer(optimizer_structure_config(config))
  abstract = jax.eval_shape(functools.partial(train_step.init_state, model, tx, config),
                            jax.random.PRNGKey(0))
  checkpoints = paths.as_path(workdir) / "checkpoints"
  if not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
    raise FileNotFoundError(f"--workdir={workdir!r} holds no checkpoint (no {checkpoints}/<step>):"
                            " --mode=restore reads a pretraining run's workdir")
  manager = checkpointing.create_manager(workdir, config)
  checkpointing.check_param_shapes(manager, abstract["params"])
  state = checkpointing.restore_latest(
      manager, checkpointing.abstract_like(abstract, partitioning.state_shardings(abstract, mesh)))
  step = int(state["step"])
  images = jax.device_put(
      input_pipeline.eval_images(viewer_data_config(config), config.viewer.num_images),
      replicated)
  out_dir = paths.as_path(workdir) / "viewer"
  is_chief = jax.process_index() == 0  # Every process computes; process 0 writes.
  report = {}
  for task in config.viewer.tasks:
    diagnose = restorations.diagnostics_fn(model, config, task, mesh)
    diag = jax.device_get(diagnose(train_step.evaluation_params(state), images,
                                   jax.random.PRNGKey(config.seed + 1)))
    if is_chief:
      image_grid.save_png(out_dir / f"{task}_step_{step:08d}.png",
                          restorations.grid(diag, config,
                                            f"task {task}, checkpoint of step {step}",
                                            config.viewer.num_grid_images))
    report[task] = restorations.scalars(diag)
  if is_chief:
    (out_dir / f"metrics_step_{step:08d}.json").write_text(json.dumps(report, indent=1))
    logging.info("Wrote the restorations of step %d to %s", step, out_dir)
  print(format_table(report))
  return report
