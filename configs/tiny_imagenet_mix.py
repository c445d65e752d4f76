"""tiny_imagenet_a (64×64) ViT-Ti/8 pretraining with a mixture: each image gets one of mask, sort, sr, denoise, color, uniformly.

  python main.py --config=configs/tiny_imagenet_mix.py --workdir=$WORKDIR

Everything else as configs/tiny_imagenet_mask.py.
"""
from configs import tiny_imagenet_mask


def get_config(arg=None):
  c = tiny_imagenet_mask.get_config(arg)
  c.corruption.name = "mix"  # Options: c.corruption.mix (configs/common.py).
  return c
