"""ImageNet-1K ViT-B/16 pretraining with colorization: the luminance-only image.

  python main.py --config=configs/vit_b_color.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.corruption.name = "color"  # Options: c.corruption.color (configs/common.py).
  return c
