"""Is the trained energy a basin or a one-step map? A test-time probe of a run's descent.

  python benchmarks/descent_probe.py --workdir=/tmp/tta/energy_mask_s0 \
      --first_step_scales=0,0.25,0.5,1,1.5 --extra_steps=2

For every `--workdir` (an energy pretraining run), corrupts the first `--num_images`
images of the viewer (or, with --images=eval_split, of the run's eval split) with `--task`,
the same corruptions for every run, and restores them with the learned step sizes, the
first one scaled by each of `--first_step_scales`, then `--extra_steps` more steps of the
last learned size. Prints the masked MSE (normalized units) of the corrupted input and
after every step, and how far the first step moves each image (root mean square over the
corrupted pixels, in pixel standard deviations: batch mean, least–largest); restored
patches are measured with the clean patches' mean and contrast when the loss is blind to
them, as in the viewer. A basin pulls a shortened or overshot first step back to the same
restoration and improves or holds it with more steps; a one-step map does neither
(docs/experiments.md, session 18).
"""
import functools
import os
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from ebm_vision import viewer
from ebm_vision.data import input_pipeline
from ebm_vision.models import create_vit
from ebm_vision.objectives import energy, energy_pretraining
from ebm_vision.run import paths, restorations, run_config
from ebm_vision.transfer import pretrained

flags.DEFINE_multi_string("workdir", None, "Energy pretraining workdirs.")
flags.DEFINE_list("first_step_scales", ["0", "0.25", "0.5", "1", "1.5"],
                  "Factors of the first learned step size.")
flags.DEFINE_integer("extra_steps", 2, "Steps of the last learned size after the learned ones.")
flags.DEFINE_string("task", "mask", "Corruption (a pretext task) of the probe.")
flags.DEFINE_enum("images", "viewer", ["viewer", "eval_split"],
                  "Images restored: the viewer's (config.viewer) or the run's eval split.")
flags.DEFINE_integer("num_images", 64, "Images restored (the first of the split).")
flags.DEFINE_integer("corruption_seed", 1, "Seed of the corruptions (the same for every run).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def probe_step_sizes(learned: jnp.ndarray, first_step_scale: float,
                     extra_steps: int) -> jnp.ndarray:
  """[K + extra_steps]: the learned sizes, the first times `first_step_scale`, then the
  last learned size repeated."""
  return jnp.concatenate([learned[:1] * first_step_scale, learned[1:],
                          jnp.repeat(learned[-1:], extra_steps)])


def probe_run(workdir: str, scales: list[float]) -> list[list[str]]:
  """Table rows of one run: one per first-step scale."""
  config = run_config.load(workdir)
  if config.get("method", "energy") != "energy":
    raise ValueError(f"--workdir={workdir!r} is a {config.method!r} run: the probe descends "
                     "on an energy (method='energy')")
  model = create_vit(config.model)
  params = pretrained.restore_params(pretrained.find_checkpoint(workdir).item_dir, None)
  learned = energy.step_sizes(params["restore"]["raw_step_size"])
  data = viewer.viewer_data_config(config) if FLAGS.images == "viewer" else config.data
  images = input_pipeline.eval_images(data, FLAGS.num_images)
  diagnose = jax.jit(functools.partial(
      energy_pretraining.diagnostics, model=model, config=config,
      corruption_config=restorations.task_corruption(config.corruption, FLAGS.task)))
  name = paths.run_label(workdir)
  rows = []
  for scale in scales:
    alphas = probe_step_sizes(learned, scale, FLAGS.extra_steps)
    diag = jax.device_get(diagnose(params, images, jax.random.PRNGKey(FLAGS.corruption_seed),
                                   step_sizes=alphas))
    rows.append([name, f"{scale:g}", " ".join(f"{a:.3g}" for a in alphas),
                 f"{diag['mse_corrupted']:.4f}"] +
                [f"{m:.4f}" for m in diag["mse_restored"]] +
                [f"{diag['step_length'][0]:.3g} ({diag['step_length_min'][0]:.3g}–"
                 f"{diag['step_length_max'][0]:.3g})"])
  return rows


def main(argv):
  del argv
  input_pipeline.hide_accelerators_from_tf()
  scales = [float(s) for s in FLAGS.first_step_scales]
  rows = [row for workdir in FLAGS.workdir for row in probe_run(workdir, scales)]
  steps = len(rows[0]) - 5
  print(f"Masked MSE on {FLAGS.num_images} {FLAGS.images} images, task {FLAGS.task}")
  print("| run | first step × | step sizes | corrupted | " +
        " | ".join(f"step {k}" for k in range(1, steps + 1)) + " | step 1 moves pixels by |")
  print("|---" * (5 + steps) + "|")
  for row in rows:
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
  app.run(main)
