"""ImageNet-1K energy-inspired pretraining of ViT-B/16 at 224, one pretext task per run.

  python main.py --config=configs/vit_b.py:task=mask --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

task: mask (default), sort, sr, denoise, color or mix (README, "Pretext tasks"); its
options are config.corruption.<task>. Needs `imagenet2012` prepared by TFDS under
data.data_dir (see README). The defaults live in configs/common.py: 100 epochs at batch
4096, AdamW with MAE's settings, 75% masking, 2 restoration steps, bf16 activations.
"""
from configs import common


def get_config(arg=None):
  """arg: 'task=<task>' (default mask)."""
  args = common.parse_arg(arg, task="mask")
  c = common.get_pretraining_config()
  c.corruption.name = args.task  # The pretext task.
  return c
