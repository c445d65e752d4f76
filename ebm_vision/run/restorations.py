"""Restorations of held-out images during pretraining and in the viewer: grids and metrics."""
from __future__ import annotations

import functools

import jax

from ebm_vision.objectives import train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning
from ebm_vision.run import image_grid, loop, paths

IMAGE_KEYS = ("clean", "corrupted", "region", "trajectory")  # The rest are scalar metrics.


def task_corruption(corruption_config, task: str):
  """`corruption_config` with its task replaced by `task` (options kept)."""
  c = corruption_config.copy_and_resolve_references()
  c.name = task
  return c


def diagnostics_fn(model, config, task: str, mesh):
  """jitted (params, uint8 images, rng) -> the objective's diagnostics of `task`,
  replicated, so that every process can fetch the images and scalars."""
  return partitioning.jit(functools.partial(
      train_step.diagnostics, model=model, config=config,
      corruption_config=task_corruption(config.corruption, task)), mesh,
      out_shardings=mesh_lib.replicated(mesh))


def scalars(diag: dict, prefix: str = "") -> dict:
  """The metrics of a diagnostics dict as flat scalars (per-step arrays as name_k)."""
  return loop.step_metrics({k: v for k, v in diag.items() if k not in IMAGE_KEYS}, prefix)


def grid(diag: dict, config, title: str, num_images=None):
  """uint8 grid of the first `num_images` (default all): clean | corrupted | each step,
  with column labels and `title` above."""
  shown = {k: diag[k][:, :num_images] if k == "trajectory" else diag[k][:num_images]
           for k in IMAGE_KEYS}
  return image_grid.restoration_grid(jax.device_get(shown), config.data.pixel_mean,
                                     config.data.pixel_std, title=title)


def write_restorations(workdir: str, step: int, task: str, diag: dict, config, writer) -> dict:
  """Writes the task's restoration grid (PNG and TensorBoard); returns its eval scalars."""
  diag = jax.device_get(diag)
  image = grid(diag, config, f"task {task}, training step {step}")
  image_grid.save_png(paths.as_path(workdir) / "restorations" / f"{task}_step_{step:08d}.png",
                      image)
  writer.write_images(step, {f"restorations/{task}": image[None]})
  return scalars(diag, f"eval/{task}/")
