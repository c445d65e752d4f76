"""ImageNet-1K ViT-B/16 pretraining with a mixture: each image gets one of mask, sort, sr, denoise, color, uniformly.

  python main.py --config=configs/vit_b_mix.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.corruption.name = "mix"  # Options: c.corruption.mix (configs/common.py).
  return c
