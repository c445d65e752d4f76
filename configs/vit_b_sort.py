"""ImageNet-1K ViT-B/16 pretraining with patch sorting: half of the patches trade places.

  python main.py --config=configs/vit_b_sort.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.corruption.name = "sort"  # Options: c.corruption.sort (configs/common.py).
  return c
