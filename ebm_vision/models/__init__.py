"""Model construction from a config."""
from __future__ import annotations

from typing import Optional

from absl import logging

from ebm_vision.models.vit import DTYPES, ViT, decode_variant


def vit_kwargs(model_config) -> dict:
  """The ViT's size from `variant` ('B/16'), with any explicit overrides applied."""
  kw = decode_variant(model_config.variant)
  for field in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
    if model_config.get(field) is not None:
      kw[field] = model_config[field]
  return kw


def create_vit(model_config, num_classes: Optional[int] = None) -> ViT:
  """Builds the ViT described by `config.model`.

  Warns when a patch holds more values than the width: the input gradient
  reaches pixels through the patch embedding, whose rank is then below the
  patch dimension, so restoration cannot move pixels in every direction.
  """
  kw = vit_kwargs(model_config)
  patch_dim = kw["patch_size"]**2 * 3
  if patch_dim > kw["width"]:
    logging.warning(
        "patch_size²·3 = %d exceeds the width %d: the energy's input gradient is "
        "confined to a %d-dimensional subspace of each patch.",
        patch_dim, kw["width"], kw["width"])
  return ViT(**kw, posemb=model_config.posemb, pool_type=model_config.pool_type,
             num_classes=num_classes, drop_path_rate=model_config.drop_path_rate,
             dtype=DTYPES[model_config.compute_dtype],
             remat_blocks=model_config.get("remat_blocks", False),
             class_token=model_config.get("class_token", None))
