"""Quickstart on a 2-core CPU, offline: a small ViT learns to restore masked patches.

  python main.py --config=configs/demo.py --workdir=/tmp/ebm_demo

Data: procedural dead-leaves images (no download). Model: 4 blocks of width 128,
patch 4, 32×32 images. See README for the measured wall time and loss.
"""
from configs import common


def get_config(arg=None):
  """arg: unused; accepted for the big_vision-style 'file.py:arg' syntax."""
  del arg
  c = common.get_pretraining_config()
  c.batch_size = 32
  c.num_train_steps = 1000
  c.model.variant = "Ti/4"
  c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_dim = 128, 4, 4, 512
  c.model.compute_dtype = "float32"  # bf16 is slower than float32 on CPUs.
  c.restore.num_steps = 1
  c.corruption.mask.ratio = 0.5
  c.loss.norm_pix = False  # Plain pixel error: the demo's loss reads as an MSE.
  c.data.source = "dead_leaves"
  c.data.image_size = 32
  c.data.pixel_mean = (0.5, 0.5, 0.5)  # Dead-leaves colours are uniform in [0.25, 0.75] on average.
  c.data.pixel_std = (0.25, 0.25, 0.25)
  c.optimizer.learning_rate_per_256 = 0.024  # Peak 3e-3 at batch 32.
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.05
  c.viewer.source = "dead_leaves"  # --mode=restore on held-out dead-leaves images.
  c.log_every_steps = 50
  c.image_every_steps = 250
  c.checkpoint_every_steps = 500
  return c
