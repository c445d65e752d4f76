"""Images <-> sequences of flattened patches."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def patchify(images: jnp.ndarray, patch_size: int) -> jnp.ndarray:
  """[B, H, W, C] -> [B, N, p·p·C] in row-major patch order."""
  b, h, w, c = images.shape
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jnp.ndarray, shape: Sequence[int], patch_size: int) -> jnp.ndarray:
  """Inverse of `patchify` for images of `shape` [B, H, W, C]."""
  b, h, w, c = shape
  p = patch_size
  x = patches.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def patch_statistics(patches: jnp.ndarray, eps: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Each patch's mean and sqrt(variance + eps) over its p·p·C values ([..., 1] each), the
  statistics of MAE's normalized-pixel target."""
  return patches.mean(-1, keepdims=True), jnp.sqrt(patches.var(-1, keepdims=True) + eps)
