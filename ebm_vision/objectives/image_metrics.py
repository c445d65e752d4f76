"""Restoration quality: PSNR and SSIM of images in [0, 1], and the metrics of a restoration."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def psnr(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Peak signal-to-noise ratio in dB per image of [B, H, W, C] arrays in [0, 1]."""
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  return -10. * jnp.log10(jnp.maximum(mse, 1e-10))


def _gaussian_valid_filter(n: int, size: int = 11, sigma: float = 1.5) -> jnp.ndarray:
  """[n − size + 1, n] matrix applying a normalized 1-D Gaussian with 'valid' padding."""
  size = min(size, n)
  x = np.arange(size) - (size - 1) / 2
  g = np.exp(-x**2 / (2 * sigma**2))
  g /= g.sum()
  m = np.zeros((n - size + 1, n), np.float32)
  for i in range(n - size + 1):
    m[i, i:i + size] = g
  return jnp.asarray(m)


def ssim(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Structural similarity per image (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, data range 1), averaged over positions and channels."""
  gh, gw = _gaussian_valid_filter(a.shape[1]), _gaussian_valid_filter(a.shape[2])
  blur = lambda x: jnp.einsum("ih,bhwc,jw->bijc", gh, x, gw)
  c1, c2 = 0.01**2, 0.03**2
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return s.mean(axis=(1, 2, 3))


def restoration_metrics(clean, corrupted, region, trajectory, pixel_mean, pixel_std) -> dict:
  """How close each restoration step comes to the clean images (all normalized).

  Args:
    clean, corrupted: [B, H, W, C]; region: [B, H, W, 1], 1 where corrupted;
    trajectory: [K, B, H, W, C] restored images after each step.

  Returns the images themselves (`clean`, `corrupted`, `region`, `trajectory`) and batch
  means of PSNR (dB) and SSIM in [0, 1] pixel space (`psnr_corrupted`, `psnr_restored` [K],
  likewise `ssim_*`) and of the squared error on the region in normalized units
  (`mse_corrupted`, `mse_restored` [K]).
  """
  mean, std = jnp.asarray(pixel_mean), jnp.asarray(pixel_std)
  to_unit = lambda x: jnp.clip(x * std + mean, 0., 1.)
  per_step = lambda f: jax.vmap(f)(trajectory)
  region_mse = lambda x: jnp.sum(jnp.square(x - clean) * region) / jnp.maximum(
      region.sum() * clean.shape[-1], 1.)
  metric = lambda fn, x: fn(to_unit(x), to_unit(clean)).mean()
  return {"clean": clean, "corrupted": corrupted, "region": region, "trajectory": trajectory,
          "psnr_corrupted": metric(psnr, corrupted),
          "psnr_restored": per_step(lambda x: metric(psnr, x)),
          "ssim_corrupted": metric(ssim, corrupted),
          "ssim_restored": per_step(lambda x: metric(ssim, x)),
          "mse_corrupted": region_mse(corrupted), "mse_restored": per_step(region_mse)}
