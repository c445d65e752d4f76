"""Quickstart on a 2-core CPU, offline: a small ViT learns to restore masked patches.

  python main.py --config=configs/demo.py --workdir=/tmp/ebm_demo

Data: procedural dead-leaves images (no download). Model: 4 blocks of width 128,
patch 4, 32×32 images. See README for the measured wall time and loss.
"""
from configs import common


def get_config():
  c = common.get_pretraining_config()
  c.batch_size = 32  # Small batches: ~0.45 s per step on 2 CPU cores.
  common.set_steps(c, num_train_steps=1000, warmup_steps=100)  # About 8.5 minutes in all on 2 CPU cores; 10% warm-up.
  c.model.variant = "Ti/4"  # Patch 4: 64 tokens for 32×32 images.
  c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_dim = 128, 4, 4, 512  # 0.8M params.
  c.model.compute_dtype = "float32"  # bf16 is slower than float32 on CPUs.
  c.restore.num_steps = 1  # One restoration step: half the cost of two.
  c.corruption.mask.ratio = 0.5  # Half of the patches masked: enough context to inpaint from.
  c.loss.norm_pix = False  # Plain pixel error: the demo's loss reads as an MSE.
  c.data.source = "dead_leaves"  # Procedural images: no download, no files.
  c.data.image_size = 32  # Small images for a CPU.
  c.data.pixel_mean = (0.5, 0.5, 0.5)  # Roughly centres dead-leaves colours (their mean is ≈ 0.375).
  c.data.pixel_std = (0.25, 0.25, 0.25)  # Roughly their spread.
  c.optimizer.learning_rate_per_256 = 0.024  # Peak 3e-3 at batch 32.
  c.viewer.source = "dead_leaves"  # --mode=restore on held-out dead-leaves images.
  c.log_every_steps = 50  # Console and TensorBoard scalars.
  c.image_every_steps = 250  # Restoration grids and held-out metrics, 4 times in the run.
  c.eval_tasks = ("mask",)  # Measure the task the demo trains, not the four it never saw.
  c.checkpoint_every_steps = 500  # Checkpoints at steps 500 and 1000.
  return c
