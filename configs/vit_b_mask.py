"""ImageNet-1K ViT-B/16 pretraining with patch masking: configs/vit_b.py:task=mask.

  python main.py --config=configs/vit_b_mask.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR
"""
from configs import vit_b


def get_config():
  return vit_b.get_config("task=mask")
