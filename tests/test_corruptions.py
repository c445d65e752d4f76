"""Masking: exact counts, patch alignment, fills, and uniform coverage."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ebm_vision import corruptions


def images(n=6, size=16):
  return jax.random.normal(jax.random.PRNGKey(0), (n, size, size, 3))


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_exactly_ratio_of_the_patches_is_masked_on_patch_boundaries(ratio):
  out = corruptions.mask_patches(images(), jax.random.PRNGKey(1), patch_size=4, ratio=ratio)
  chex.assert_shape(out.region, (6, 16, 16, 1))
  chex.assert_type(out.region, jnp.float32)
  patches = np.asarray(out.region)[..., 0].reshape(6, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4)
  patches = patches.reshape(6, 16, 16)
  per_patch = patches.mean(-1)
  assert set(np.unique(per_patch)) <= {0., 1.}  # Each patch wholly masked or not.
  np.testing.assert_array_equal(per_patch.sum(-1), round(ratio * 16))


@pytest.mark.parametrize("fill", corruptions.MASK_FILLS)
def test_visible_pixels_are_untouched_and_masked_pixels_filled(fill):
  x = images(n=64)
  out = corruptions.mask_patches(x, jax.random.PRNGKey(2), patch_size=4, ratio=0.5, fill=fill)
  visible, masked = np.asarray(out.region[..., 0]) == 0, np.asarray(out.region[..., 0]) == 1
  np.testing.assert_array_equal(np.asarray(out.images)[visible], np.asarray(x)[visible])
  filled = np.asarray(out.images)[masked]
  if fill == "zeros":
    np.testing.assert_array_equal(filled, 0.)
  elif fill == "mean":
    means = np.broadcast_to(np.asarray(x).mean(axis=(1, 2), keepdims=True), x.shape)
    np.testing.assert_allclose(filled, means[masked], rtol=1e-5, atol=1e-6)
  else:  # Fresh N(0, 1) noise, unrelated to the image.
    assert abs(filled.mean()) < 0.02 and abs(filled.std() - 1) < 0.02
    assert abs(np.corrcoef(filled.ravel(), np.asarray(x)[masked].ravel())[0, 1]) < 0.02


def test_every_patch_is_masked_equally_often():
  masks = corruptions.random_patch_mask(jax.random.PRNGKey(3), 4000, 16, 0.25)
  freq = np.asarray(masks).mean(0)
  np.testing.assert_allclose(freq, 0.25, atol=0.03)
  assert not np.array_equal(masks[0], masks[1])


def test_corrupt_dispatches_by_name_with_options():
  cfg = ml_collections.ConfigDict({"name": "mask", "mask": {"ratio": 0.5, "fill": "zeros"}})
  out = corruptions.corrupt(images(), jax.random.PRNGKey(4), cfg, patch_size=8)
  np.testing.assert_array_equal(np.asarray(out.region).reshape(6, -1).mean(-1), 0.5)
  np.testing.assert_array_equal(np.asarray(out.images)[np.asarray(out.region[..., 0]) == 1], 0.)
