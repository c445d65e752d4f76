"""Restoration quality: PSNR and SSIM (dm_pix) of images in [0, 1], and the metrics of a
restoration."""
from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp


def psnr(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Peak signal-to-noise ratio in dB per image of [B, H, W, C] arrays in [0, 1]; identical
  images read 100 dB (not ∞), so that batch means stay finite."""
  return -10. * jnp.log10(jnp.maximum(dm_pix.mse(a, b), 1e-10))


def ssim(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Structural similarity per image (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, data range 1), averaged over positions and channels."""
  return dm_pix.ssim(a, b, max_val=1.)


def region_mse(x: jnp.ndarray, clean: jnp.ndarray, region: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error of [B, H, W, C] `x` against `clean` over `region` [B, H, W, 1]."""
  return jnp.sum(jnp.square(x - clean) * region) / jnp.maximum(
      region.sum() * clean.shape[-1], 1.)


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
  metric = lambda fn, x: fn(to_unit(x), to_unit(clean)).mean()
  return {"clean": clean, "corrupted": corrupted, "region": region, "trajectory": trajectory,
          "psnr_corrupted": metric(psnr, corrupted),
          "psnr_restored": per_step(lambda x: metric(psnr, x)),
          "ssim_corrupted": metric(ssim, corrupted),
          "ssim_restored": per_step(lambda x: metric(ssim, x)),
          "mse_corrupted": region_mse(corrupted, clean, region),
          "mse_restored": per_step(lambda x: region_mse(x, clean, region))}
