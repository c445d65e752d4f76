"""The test-sized pretraining config, for fixtures and for main.py in subprocess tests:

  python main.py --config=tests/tiny_config.py --workdir=/tmp/tiny
"""
from configs import common


def get_config():
  """Tiny ViT (width 64, 2 blocks, patch 4) on 16×16 offline dead-leaves images."""
  c = common.get_pretraining_config()
  common.tiny_model(c)
  c.data.source = "dead_leaves"  # Procedural images: no files, no download.
  c.data.pixel_mean, c.data.pixel_std = (0.5,) * 3, (0.25,) * 3  # Roughly their statistics.
  c.restore.num_steps = 2  # Two steps: the scan over restoration steps is exercised.
  c.eval_tasks = ("mask",)  # One held-out task keeps compilation short; see test_train.
  c.optimizer.learning_rate_per_256 = 0.1  # Peak 3e-3 at batch 8: visible progress in a few steps.
  return c
