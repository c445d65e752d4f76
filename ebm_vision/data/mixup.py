"""Mixup and CutMix of a batch with its reverse (MAE's fine-tuning recipe, timm's 'batch' mode)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_labels(labels: jnp.ndarray, num_classes: int, smoothing: float) -> jnp.ndarray:
  """One-hot targets with `smoothing` spread uniformly over the classes."""
  return jax.nn.one_hot(labels, num_classes) * (1. - smoothing) + smoothing / num_classes


def mix_batch(rng: jax.Array, images: jnp.ndarray, targets: jnp.ndarray, *,
              mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
              switch_prob: float = 0.5) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mixes every example with the batch's reverse by Mixup or (w.p. `switch_prob`) CutMix.

  λ ~ Beta(α, α) for the chosen method; CutMix pastes a box of area ≈ (1 − λ)
  and sets λ to the exact area kept. Targets are mixed with the same λ. An
  alpha of 0 disables that method; both 0 returns the batch unchanged.
  """
  if not mixup_alpha and not cutmix_alpha:
    return images, targets
  k_switch, k_mix, k_cut, k_box = jax.random.split(rng, 4)
  use_cutmix = (jax.random.uniform(k_switch) < switch_prob) if (mixup_alpha and cutmix_alpha) \
      else jnp.asarray(bool(cutmix_alpha))
  lam_mix = jax.random.beta(k_mix, mixup_alpha or 1., mixup_alpha or 1.)
  lam_cut = jax.random.beta(k_cut, cutmix_alpha or 1., cutmix_alpha or 1.)

  _, h, w, _ = images.shape
  cut = jnp.sqrt(1. - lam_cut)
  cy, cx = jax.random.randint(k_box, (2,), 0, jnp.array([h, w]))
  y0 = jnp.clip(cy - jnp.round(cut * h / 2), 0, h).astype(jnp.int32)
  y1 = jnp.clip(cy + jnp.round(cut * h / 2), 0, h).astype(jnp.int32)
  x0 = jnp.clip(cx - jnp.round(cut * w / 2), 0, w).astype(jnp.int32)
  x1 = jnp.clip(cx + jnp.round(cut * w / 2), 0, w).astype(jnp.int32)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))[None, :, :, None]
  lam_box = 1. - (y1 - y0) * (x1 - x0) / (h * w)

  flipped = images[::-1]
  mixed = jnp.where(use_cutmix, jnp.where(box, flipped, images),
                    lam_mix * images + (1. - lam_mix) * flipped)
  lam = jnp.where(use_cutmix, lam_box, lam_mix)
  return mixed, lam * targets + (1. - lam) * targets[::-1]
