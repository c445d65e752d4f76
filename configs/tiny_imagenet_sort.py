"""tiny_imagenet_a (64×64) ViT-Ti/8 pretraining with patch sorting: half of the patches trade places.

  python main.py --config=configs/tiny_imagenet_sort.py --workdir=$WORKDIR

Everything else as configs/tiny_imagenet_mask.py.
"""
from configs import tiny_imagenet_mask


def get_config(arg=None):
  c = tiny_imagenet_mask.get_config(arg)
  c.corruption.name = "sort"  # Options: c.corruption.sort (configs/common.py).
  return c
