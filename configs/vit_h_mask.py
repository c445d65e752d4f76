"""ImageNet-1K energy-inspired pretraining of ViT-H/14 at 224 with patch masking, FSDP.

  launch/tpu_pod.sh run --name=ebm-h --zone=$ZONE --bucket=$BUCKET --config=configs/vit_h_mask.py
  sbatch --nodes=32 launch/gpu_slurm.sbatch configs/vit_h_mask.py $WORKDIR

Parameters and AdamW moments are split over all devices (ZeRO-3); 256 tokens per
image (patch 14). XLA's estimate of the second-order step is about 2.8 GiB per image
per device (README "Scaling out"), so the 4096 batch wants ~256 devices with ≥ 64 GiB
each (16 images per device: a v5p-512 slice, or 32 nodes of 8 H100s); on fewer devices
lower --config.batch_size (the learning rate follows it linearly). Everything else as
configs/vit_b.py.
"""
from configs import vit_b


def get_config():
  c = vit_b.get_config()
  c.model.variant = "H/14"  # 632M parameters, 32 blocks of width 1280.
  c.mesh.data = 1  # No pure data-parallel replicas...
  c.mesh.fsdp = -1  # ...every device holds 1/n of the weights and moments and of the batch.
  return c
