"""ImageNet-1K energy-inspired pretraining of ViT-L/16 at 224 with patch masking, FSDP.

  launch/tpu_pod.sh run --name=ebm-l --zone=$ZONE --bucket=$BUCKET --config=configs/vit_l_mask.py
  sbatch --nodes=16 launch/gpu_slurm.sbatch configs/vit_l_mask.py $WORKDIR

Parameters and AdamW moments are split over all devices (ZeRO-3). The second-order
step is memory-hungry: XLA's estimate is about 1.2 GiB per image per device (README
"Scaling out"), so the 4096 batch wants ~128 devices with ≥ 48 GiB each (32 images
per device: a v5p-256 slice, or 16 nodes of 8 H100s); on fewer devices lower
--config.batch_size (the learning rate follows it linearly). Everything else as
configs/vit_b.py.
"""
from configs import vit_b


def get_config():
  c = vit_b.get_config()
  c.model.variant = "L/16"  # 304M parameters, 24 blocks of width 1024.
  c.mesh.data = 1  # No pure data-parallel replicas...
  c.mesh.fsdp = -1  # ...every device holds 1/n of the weights and moments and of the batch.
  return c
