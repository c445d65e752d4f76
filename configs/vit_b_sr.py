"""ImageNet-1K ViT-B/16 pretraining with super-resolution: ×2 or ×4 area down-sampling, bicubic up-sampling.

  python main.py --config=configs/vit_b_sr.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.corruption.name = "sr"  # Options: c.corruption.sr (configs/common.py).
  return c
