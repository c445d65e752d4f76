"""ImageNet-1K energy-inspired pretraining of ViT-L/16 at 224 with patch masking, FSDP.

  launch/tpu_pod.sh run --name=ebm-l --zone=$ZONE --bucket=$BUCKET --config=configs/vit_l_mask.py
  sbatch --nodes=4 launch/gpu_slurm.sbatch configs/vit_l_mask.py $WORKDIR

Sized for a v4-64 or v5p-64 slice (32 chips) or 4 nodes of 8 H100s: parameters and
AdamW moments are split over all devices (ZeRO-3) and each device holds 128 images
of the 4096 batch. README "Scaling out" lists the memory per device of the compiled
step. Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.model.variant = "L/16"  # 304M parameters, 24 blocks of width 1024.
  c.mesh.data = 1  # No pure data-parallel replicas...
  c.mesh.fsdp = -1  # ...every device holds 1/n of the weights and moments and of the batch.
  return c
