"""tiny_imagenet_a (64×64) ViT-Ti/8 pretraining with denoising: Gaussian noise, σ uniform in [0.05, 0.3] of the pixel range.

  python main.py --config=configs/tiny_imagenet_denoise.py --workdir=$WORKDIR

Everything else as configs/tiny_imagenet_mask.py.
"""
from configs import tiny_imagenet_mask


def get_config(arg=None):
  c = tiny_imagenet_mask.get_config(arg)
  c.corruption.name = "denoise"  # Options: c.corruption.denoise (configs/common.py).
  return c
