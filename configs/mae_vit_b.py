"""MAE baseline: ImageNet-1K ViT-B/16 at 224, in this codebase (`method='mae'`).

  python main.py --config=configs/mae_vit_b.py --workdir=$WORKDIR \
      --config.data.data_dir=$TFDS_DATA_DIR

The same as configs/vit_b.py except the objective: the ViT encodes the visible
25% of the patches, an 8-block 512-wide decoder predicts the masked ones, and the
loss is MAE's normalized-pixel error. Transfer with the same transfer configs.
"""
from configs import vit_b


def get_config():
  c = vit_b.get_config()
  c.method = "mae"  # The MAE objective; the mask ratio is corruption.mask.ratio (0.75).
  c.loss.norm_pix = True  # MAE's normalized-pixel targets (MAE's default and best setting).
  c.eval_tasks = ("mask",)  # MAE restores masked patches only.
  c.viewer.tasks = ("mask",)  # Likewise for --mode=restore.
  return c
