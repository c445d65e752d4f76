"""Why a backbone transfers or not: per-block statistics and kNN, and the run's restoration state.

  python benchmarks/backbone_diagnostics.py --workdir=/tmp/ablation/b3_s0 --workdir=random

For every `--workdir` (a pretraining run; 'random' = a random init of the first run's
architecture, or of configs/tiny_imagenet.py's shrunk as in the benchmarks), prints
per block: token RMS, mean pairwise cosine and effective rank of the token-mean
features on `--num_images` validation images, kNN top-1 of that block's
standardized pooled tokens (train[:num_train] as memory bank) and, for a run, how far the
block's parameters moved from the run's own initial values (‖θ − θ₀‖ / ‖θ₀‖; θ₀ is
remade from the run's seed); for a run also its step sizes, the ViT's parameter norm and
how far the patch embedding moved. The data set is the run's own (config.json).
"""
import os
import sys

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from ebm_vision.data import input_pipeline
from ebm_vision.models import create_vit
from ebm_vision.objectives import energy, train_step
from ebm_vision.run import paths, run_config
from ebm_vision.transfer import block_statistics, features, pretrained

flags.DEFINE_multi_string("workdir", None, "Pretraining workdirs, or 'random'.")
flags.DEFINE_integer("num_images", 512, "Validation images of the block statistics.")
flags.DEFINE_integer("num_train", 5000, "Train images in the kNN memory bank.")
flags.DEFINE_integer("num_eval", 1000, "Validation images classified by kNN.")
flags.DEFINE_integer("seed", 0, "Seed of a random init.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def backbone(workdir: str, reference):
  """(model, params, run config, extra rows, relative change per part or {}) of a workdir
  or of a random init."""
  if workdir == "random":
    model = create_vit(reference.model)
    size = reference.data.image_size
    params = model.init(jax.random.PRNGKey(FLAGS.seed), np.zeros((1, size, size, 3)))["params"]
    return model, params, reference, {}, {}
  config = run_config.load(workdir)
  model, params = pretrained.load_pretrained(workdir)
  initial = train_step.initial_params(create_vit(config.model), config,
                                      jax.random.PRNGKey(config.seed))["model"]
  moved = block_statistics.relative_change(params, initial)
  extra = {"param_norm": float(np.sqrt(sum(np.sum(np.square(p))
                                           for p in jax.tree.leaves(params)))),
           "embedding_moved": round(moved["embedding"], 4)}
  state_dir = pretrained.find_checkpoint(workdir).item_dir
  if config.get("method", "energy") == "energy":
    raw = pretrained.restore_params(state_dir, "restore")["raw_step_size"]
    extra["step_sizes"] = np.asarray(energy.step_sizes(raw)).round(3).tolist()
  return model, params, config, extra, moved


def knn_per_block(model, params, config) -> list[float]:
  """kNN top-1 of each block's standardized pooled tokens."""
  fn = features.make_feature_fn(model, config.data.pixel_mean, config.data.pixel_std,
                                per_block=True)
  (_, train), train_y = features.extract_features(fn, params, input_pipeline.labeled_batches(
      config.data, config.data.train_split, 256, FLAGS.num_train))
  (_, test), test_y = features.extract_features(fn, params, input_pipeline.labeled_batches(
      config.data, config.data.eval_split, 256, FLAGS.num_eval))
  num_classes = input_pipeline.num_classes(config.data)
  return [features.knn_accuracy(train[:, i], train_y, test[:, i], test_y, num_classes)
          for i in range(train.shape[1])]


def main(argv):
  del argv
  input_pipeline.hide_accelerators_from_tf()
  runs = [w for w in FLAGS.workdir if w != "random"]
  if runs:
    reference = run_config.load(runs[0])
  else:
    from configs import tiny_imagenet
    reference = tiny_imagenet.get_config()
  rows = ["| run | block | token RMS | mean cosine | effective rank | kNN top-1 | "
          "moved from init |", "|---|---|---|---|---|---|---|"]
  for workdir in FLAGS.workdir:
    model, params, config, extra, moved = backbone(workdir, reference)
    images = input_pipeline.eval_images(config.data, FLAGS.num_images)
    stats = block_statistics.block_statistics(model, params, images, config.data.pixel_mean,
                                              config.data.pixel_std)
    knn = knn_per_block(model, params, config)
    name = paths.run_label(workdir)
    for i, (s, k) in enumerate(zip(stats, knn)):
      block_moved = moved.get(f"encoderblock_{i}")
      rows.append(f"| {name} | {i + 1} | {s['token_rms']:.3f} | {s['mean_cosine']:.3f} | "
                  f"{s['effective_rank']:.1f} | {100 * k:.2f}% | "
                  f"{'–' if block_moved is None else f'{block_moved:.4f}'} |")
    if extra:
      print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
