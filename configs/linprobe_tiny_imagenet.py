"""kNN and linear-probe top-1 on tiny_imagenet_a from frozen features (the CPU-friendly fast path).

  python main.py --config=configs/linprobe_tiny_imagenet.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR

Features of the 50,500 training and 5,050 validation images (64×64 centre crops)
are extracted once; a kNN classifier and a linear classifier on standardized
features are fitted on them. Without --config.pretrained it evaluates a random
init of config.model. Results in README ("Transfer").
"""
from configs import common, tiny_imagenet


def get_config():
  c = common.get_transfer_config()
  pretrain = tiny_imagenet.get_config()
  c.model, c.data = pretrain.model, pretrain.data  # Same architecture and data set.
  c.mode = "linear_probe"  # kNN and linear probe on frozen features.
  c.batch_size = 512  # Feature-extraction batch.
  c.data.eval_crop_fraction = 1.0  # 64×64 images: no centre crop.
  c.frozen.probe_epochs = 30  # Enough for 101 classes on fixed features (4 s on a CPU).
  c.frozen.probe_batch_size = 512  # 98 steps per epoch.
  return c
