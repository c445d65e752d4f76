"""MAE baseline on `tiny_imagenet_a` (64×64), ViT-Ti/8: configs/tiny_imagenet.py's objective.

The counterpart of configs/tiny_imagenet.py with the objective changed, and nothing else.

  python main.py --config=configs/mae_tiny_imagenet.py --workdir=$WORKDIR

The decoder is scaled down with the encoder (4 blocks of width 128), as MAE's
ViT-B decoder is about a tenth of the encoder's compute.
"""
from configs import tiny_imagenet


def get_config():
  c = tiny_imagenet.get_config()
  c.method = "mae"  # The MAE objective; the mask ratio is corruption.mask.ratio (0.75).
  c.loss.norm_pix = True  # MAE's normalized-pixel targets (MAE's default and best setting).
  c.mae.decoder_width = 128  # Decoder width.
  c.mae.decoder_depth = 4  # Decoder blocks.
  c.mae.decoder_num_heads = 4  # Decoder attention heads.
  c.eval_tasks = ("mask",)  # MAE restores masked patches only.
  c.viewer.tasks = ("mask",)  # Likewise for --mode=restore.
  return c
