"""ImageNet-1K ViT-B/16 pretraining with denoising: Gaussian noise, σ uniform in [0.05, 0.3] of the pixel range.

  python main.py --config=configs/vit_b_denoise.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.corruption.name = "denoise"  # Options: c.corruption.denoise (configs/common.py).
  return c
