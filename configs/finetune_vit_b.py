"""Fine-tuning a pretrained ViT-B/16 on ImageNet-1K at 224 (MAE's recipe).

  python main.py --config=configs/finetune_vit_b.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR

100 epochs at batch 1024, AdamW (base lr 5e-4 per 256, β2 0.999, wd 0.05), layer decay 0.65,
drop path 0.1, mixup 0.8 / cutmix 1.0, label smoothing 0.1, global-pool features.
"""
from configs import common


def get_config():
  c = common.get_transfer_config()
  c.mode = "finetune"  # Train the whole network with labels.
  c.model.compute_dtype = "bfloat16"  # Only used for a random-init baseline (no --config.pretrained).
  return c
