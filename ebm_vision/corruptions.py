"""Corruptions: the pretext tasks.

Every corruption is a pure function `fn(images, rng, *, patch_size, **options)`
of normalized float images [B, H, W, C] that returns a `Corrupted`: the
corrupted images and the region [B, H, W, 1] (1 = corrupted) that the
restoration may update and the loss may cover. A new pretext task is one more
function in `CORRUPTIONS`; the network does not change.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MASK_FILLS = ("noise", "zeros", "mean")


class Corrupted(NamedTuple):
  images: jnp.ndarray  # [B, H, W, C] corrupted images.
  region: jnp.ndarray  # [B, H, W, 1] float32, 1 where the image was corrupted.


def random_patch_mask(rng: jax.Array, batch: int, num_patches: int,
                      ratio: float) -> jnp.ndarray:
  """[batch, num_patches] booleans with exactly round(ratio·num_patches) True per row."""
  num_masked = int(round(ratio * num_patches))
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, num_patches)), -1), -1)
  return ranks < num_masked


def patch_mask_to_pixels(patch_mask: jnp.ndarray, grid: tuple[int, int],
                         patch_size: int) -> jnp.ndarray:
  """[B, h*w] patch mask -> [B, h*p, w*p, 1] float pixel mask."""
  b = patch_mask.shape[0]
  m = patch_mask.reshape(b, *grid).astype(jnp.float32)
  m = jnp.repeat(jnp.repeat(m, patch_size, axis=1), patch_size, axis=2)
  return m[..., None]


def mask_patches(images: jnp.ndarray, rng: jax.Array, *, patch_size: int,
                 ratio: float = 0.75, fill: str = "noise") -> Corrupted:
  """Masked image modeling: replaces a random `ratio` of the patches.

  fill: 'noise' (standard normal, i.e. the data's per-channel spread),
  'zeros' (the data-set mean colour, as images are normalized) or 'mean'
  (each image's own mean colour).
  """
  b, h, w, c = images.shape
  grid = (h // patch_size, w // patch_size)
  mask_rng, fill_rng = jax.random.split(rng)
  patch_mask = random_patch_mask(mask_rng, b, grid[0] * grid[1], ratio)
  region = patch_mask_to_pixels(patch_mask, grid, patch_size)
  if fill == "noise":
    filler = jax.random.normal(fill_rng, images.shape, images.dtype)
  elif fill == "zeros":
    filler = jnp.zeros_like(images)
  elif fill == "mean":
    filler = jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
  else:
    raise ValueError(f"mask fill {fill!r} is not one of {MASK_FILLS}")
  return Corrupted(images=jnp.where(region > 0, filler, images), region=region)


# name -> corruption function; config.corruption.<name> holds its options.
CORRUPTIONS = {
    "mask": mask_patches,
}


def corrupt(images: jnp.ndarray, rng: jax.Array, corruption_config,
            patch_size: int) -> Corrupted:
  """Applies the corruption named by `corruption_config.name` with its options."""
  name = corruption_config.name
  options = dict(corruption_config.get(name, {}))
  return CORRUPTIONS[name](images, rng, patch_size=patch_size, **options)
