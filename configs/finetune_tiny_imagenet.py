"""Fine-tuning on tiny_imagenet_a (64×64, 101 classes), MAE's recipe at small scale.

  python main.py --config=configs/finetune_tiny_imagenet.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR

50 epochs at batch 256; the architecture comes from the pretraining run.
"""
from configs import common, tiny_imagenet


def get_config():
  c = common.get_transfer_config()
  pretrain = tiny_imagenet.get_config()
  c.model, c.data = pretrain.model, pretrain.data  # Same architecture and data set.
  c.mode = "finetune"  # Train the whole network with labels.
  c.batch_size = 256  # Global batch.
  epochs = lambda n: common.steps(n, common.TINY_IMAGENET_A_TRAIN_IMAGES, c.batch_size)
  c.num_epochs = 50.  # Passes over the training split.
  c.optimizer.learning_rate_per_256 = 1e-3  # Small models take a higher rate.
  c.optimizer.warmup_epochs = 5.  # Warm-up.
  c.finetune.layer_decay = 0.75  # Shallower model (12 blocks of width 192).
  c.finetune.eval_every_steps = epochs(5)  # Every 5 epochs.
  c.data.eval_crop_fraction = 1.0  # 64×64 images: no centre crop.
  c.data.crop_min_scale = 0.35  # Milder crops on tiny images.
  c.log_every_steps = 50  # Console and TensorBoard scalars.
  return c
