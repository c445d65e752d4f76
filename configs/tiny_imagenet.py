"""Small real-data pretraining on `tiny_imagenet_a` (64×64, 101 classes), ViT-Ti/8.

  python main.py --config=configs/tiny_imagenet.py:task=mask --workdir=$WORKDIR

task: mask (default), sort, sr, denoise, color or mix. Reads the prepared data set in
../shared/data/tfds (data.data_dir); 64 tokens of width 192 per image. 100 epochs of
50,500 images at batch 256 (19,700 steps): a GPU run; on a 2-core CPU, shorten it with
--config.num_epochs (or --config.num_epochs=None --config.num_train_steps=N).
"""
from configs import common


def get_config(arg=None):
  """arg: 'task=<task>' (default mask)."""
  args = common.parse_arg(arg, task="mask")
  c = common.get_pretraining_config()
  c.corruption.name = args.task  # The pretext task.
  c.batch_size = 256  # Global batch.
  c.num_epochs = 100.  # 19,700 steps at batch 256.
  c.model.variant = "Ti/8"  # 8·8·3 = 192 values per patch = the width.
  c.data.name = "tiny_imagenet_a"  # 101 Tiny-ImageNet classes, 64×64.
  c.data.data_dir = "../shared/data/tfds"  # Relative to the repository root.
  c.data.image_size = 64  # The data set's own resolution.
  c.data.eval_crop_fraction = 1.0  # Images are already 64×64: no centre crop.
  c.data.shuffle_buffer = 20_000  # 40% of the 50,500 training images.
  c.optimizer.learning_rate_per_256 = 8e-3  # 1e-3 at batch 32: small models need a high rate (1e-3 per 256 cost the energy objective 1.3 points of kNN; docs/experiments.md).
  c.optimizer.warmup_epochs = 5.  # Warm-up.
  c.log_every_steps = 50  # Console and TensorBoard scalars.
  c.image_every_steps = 1000  # Restoration grids and held-out metrics.
  return c
