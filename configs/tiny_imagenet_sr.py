"""tiny_imagenet_a (64×64) ViT-Ti/8 pretraining with super-resolution: ×2 or ×4 area down-sampling, bicubic up-sampling.

  python main.py --config=configs/tiny_imagenet_sr.py --workdir=$WORKDIR

Everything else as configs/tiny_imagenet_mask.py.
"""
from configs import tiny_imagenet_mask


def get_config(arg=None):
  c = tiny_imagenet_mask.get_config(arg)
  c.corruption.name = "sr"  # Options: c.corruption.sr (configs/common.py).
  return c
