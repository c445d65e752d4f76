"""Conversion between uint8 pixels (what the input pipeline yields) and model inputs."""
import jax.numpy as jnp
import numpy as np


def normalize(images, mean, std) -> jnp.ndarray:
  """uint8 [..., C] -> float32 (images/255 − mean)/std, per channel."""
  x = jnp.asarray(images, jnp.float32) / 255.
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def to_uint8(images, mean, std) -> np.ndarray:
  """Inverse of `normalize`, clipped to [0, 255]."""
  x = (np.asarray(images, np.float32) * np.asarray(std) + np.asarray(mean)) * 255.
  return np.clip(np.round(x), 0, 255).astype(np.uint8)
