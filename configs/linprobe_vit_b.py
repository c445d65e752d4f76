"""kNN and linear-probe top-1 of a pretrained ViT-B/16 on ImageNet-1K (frozen features).

  python main.py --config=configs/linprobe_vit_b.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR

Features of the 1.28M training and 50k validation centre crops (224) are extracted once
(3.9 GB of float32 on the host); the kNN classifier (k = 20, T = 0.07) and a linear classifier
on standardized features (MAE's BatchNorm without affine; AdamW, 90 epochs) are fitted on them.
"""
from configs import common


def get_config():
  c = common.get_transfer_config()
  c.mode = "linear_probe"  # kNN and linear probe on frozen features.
  c.frozen.probe_batch_size = 16384  # MAE's linear-probe batch.
  c.frozen.probe_learning_rate = 3e-3  # Higher than the default for the large batch.
  return c
