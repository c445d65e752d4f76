"""Restoration quality in pixel space: PSNR and SSIM of images in [0, 1]."""
from __future__ import annotations

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
