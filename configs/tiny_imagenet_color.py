"""tiny_imagenet_a (64×64) ViT-Ti/8 pretraining with colorization: the luminance-only image.

  python main.py --config=configs/tiny_imagenet_color.py --workdir=$WORKDIR

Everything else as configs/tiny_imagenet_mask.py.
"""
from configs import tiny_imagenet_mask


def get_config(arg=None):
  c = tiny_imagenet_mask.get_config(arg)
  c.corruption.name = "color"  # Options: c.corruption.color (configs/common.py).
  return c
