"""Histograms of oriented gradients (HOG) as the restoration target (MaskFeat, Wei et al. 2022).

With `loss.target='hog'` the energy objective compares each restored patch with the clean
one by its HOG instead of its pixels: per colour channel, every pixel's gradient magnitude
is spread over `NUM_BINS` unsigned orientations, summed over cells of `cell_size`² pixels,
and each patch's cells × channels × bins vector is L2-normalized. The target is blind to a
patch's mean colour and contrast, and keeps where and how its edges run.

The binning is smooth (no atan2, finite gradients on flat pixels such as a zero-filled
mask): an orientation θ gives bin b the share max(0, cos 2(θ − θ_b))^LOBE_POWER, computed
from gx² − gy² and 2·gx·gy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ebm_vision.data.patches import patchify
from ebm_vision.objectives import energy

NUM_BINS = 9  # Unsigned orientations over 180°, θ_b = 20° · b (Dalal & Triggs; MaskFeat).
LOBE_POWER = 3  # A gradient gives the bins 20° away 0.45 of its share, 40° away 0.005.
_GRADIENT_EPS = 1e-6  # Floor of the squared gradient magnitude (normalized pixels²).
_NORM_EPS = 1e-2  # Floor of a patch vector's squared norm: a flat patch's HOG stays ~0.


def oriented_gradients(images: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H, W, C, NUM_BINS]: each pixel's gradient magnitude (central
  differences, edges replicated) spread over the orientation bins."""
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  gx = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
  gy = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
  gx2, gy2 = jnp.square(gx), jnp.square(gy)
  squared = gx2 + gy2 + _GRADIENT_EPS
  cos2, sin2 = (gx2 - gy2) / squared, 2. * gx * gy / squared
  angles = jnp.pi * jnp.arange(NUM_BINS) / NUM_BINS
  alignment = cos2[..., None] * jnp.cos(2. * angles) + sin2[..., None] * jnp.sin(2. * angles)
  return jnp.sqrt(squared)[..., None] * jnp.maximum(alignment, 0.) ** LOBE_POWER


def patch_hog(images: jnp.ndarray, patch_size: int, cell_size: int) -> jnp.ndarray:
  """[B, H, W, C] -> [B, N, (p / cell)² · C · NUM_BINS]: each patch's L2-normalized HOG
  (patches in `patchify` order)."""
  g = oriented_gradients(images)
  b, h, w, c, bins = g.shape
  cells = g.reshape(b, h // cell_size, cell_size, w // cell_size, cell_size, c, bins)
  cells = cells.sum(axis=(2, 4)).reshape(b, h // cell_size, w // cell_size, c * bins)
  hog = patchify(cells, patch_size // cell_size)
  return hog / jnp.sqrt(jnp.sum(jnp.square(hog), -1, keepdims=True) + _NORM_EPS)


def restoration_loss(trajectory: jnp.ndarray, clean: jnp.ndarray, region: jnp.ndarray, *,
                     patch_size: int, cell_size: int, steps: str = "all"):
  """Squared distance between the patch HOGs of each restored image and of the clean one.

  Summed over a patch's HOG and averaged over the patches of `region` [B, H, W, 1] (a patch
  weighs the fraction of its pixels in it); `steps` weighs the K steps as
  `energy.loss_step_weights`. Returns (loss scalar, per-step losses [K]).
  """
  target = patch_hog(clean, patch_size, cell_size)
  weights = patchify(region, patch_size).mean(-1)  # [B, N].
  def step_loss(restored):
    distance = jnp.sum(jnp.square(patch_hog(restored, patch_size, cell_size) - target), -1)
    return jnp.sum(distance * weights) / jnp.maximum(weights.sum(), 1e-6)
  per_step = jax.vmap(step_loss)(trajectory)
  return jnp.dot(energy.loss_step_weights(steps, per_step.shape[0]), per_step), per_step
