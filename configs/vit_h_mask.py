"""ImageNet-1K energy-inspired pretraining of ViT-H/14 at 224 with patch masking, FSDP.

  launch/tpu_pod.sh run --name=ebm-h --zone=$ZONE --bucket=$BUCKET --config=configs/vit_h_mask.py
  sbatch --nodes=8 launch/gpu_slurm.sbatch configs/vit_h_mask.py $WORKDIR

Sized for a v4-128 or v5p-128 slice (64 chips) or 8 nodes of 8 H100s: parameters and
AdamW moments split over all devices (ZeRO-3), 64 images of the 4096 batch per
device, 256 tokens per image (patch 14). README "Scaling out" lists the memory per
device of the compiled step. Everything else as configs/vit_b_mask.py.
"""
from configs import vit_b_mask


def get_config(arg=None):
  c = vit_b_mask.get_config(arg)
  c.model.variant = "H/14"  # 632M parameters, 32 blocks of width 1280.
  c.mesh.data = 1  # No pure data-parallel replicas...
  c.mesh.fsdp = -1  # ...every device holds 1/n of the weights and moments and of the batch.
  return c
