"""ImageNet-1K energy-inspired pretraining of ViT-B/16 at 224 with patch masking.

  python main.py --config=configs/vit_b_mask.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Needs `imagenet2012` prepared by TFDS under data.data_dir (see README). The
defaults live in configs/common.py: 100 epochs at batch 4096, AdamW with MAE's
settings, 75% masking with noise fill, 2 restoration steps, bf16 activations.
"""
from configs import common


def get_config(arg=None):
  """arg: unused; accepted for the big_vision-style 'file.py:arg' syntax."""
  del arg
  return common.get_pretraining_config()
