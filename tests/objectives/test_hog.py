"""HOG restoration target: orientation bins, invariances, finite gradients, masked loss."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from ebm_vision.objectives import hog


def _edge(angle_degrees: float, size: int = 16) -> jnp.ndarray:
  """[1, size, size, 3]: a smooth step whose gradient points at `angle_degrees`."""
  y, x = np.mgrid[:size, :size] - (size - 1) / 2
  theta = np.deg2rad(angle_degrees)
  ramp = np.tanh(x * np.cos(theta) + y * np.sin(theta))
  return jnp.asarray(np.repeat(ramp[None, :, :, None], 3, axis=-1), jnp.float32)


def test_an_edge_fills_the_bin_of_its_gradient_orientation():
  for angle, peak in ((0., [0]), (40., [2]), (90., [4, 5]), (140., [7]), (320., [7])):
    bins = np.asarray(hog.oriented_gradients(_edge(angle))).sum(axis=(0, 1, 2, 3))
    np.testing.assert_allclose(bins[peak], bins.max(), rtol=1e-4, err_msg=str(angle))
    assert bins[(peak[-1] + 3) % hog.NUM_BINS] < 0.05 * bins.max(), angle


def test_patch_hog_shape_norm_and_blindness_to_mean_and_contrast():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  h = hog.patch_hog(images, patch_size=8, cell_size=4)
  chex.assert_shape(h, (2, 4, 2 * 2 * 3 * hog.NUM_BINS))  # 4 patches of 2 × 2 cells.
  np.testing.assert_allclose(jnp.linalg.norm(h, axis=-1), 1., atol=1e-3)
  np.testing.assert_allclose(hog.patch_hog(3. * images + 1., 8, 4), h, atol=1e-3)
  flat = hog.patch_hog(jnp.zeros((1, 16, 16, 3)), 8, 4)
  assert float(jnp.abs(flat).max()) < 1e-2


def test_gradients_are_finite_on_flat_pixels_and_match_finite_differences():
  with jax.enable_x64(True):
    images = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 2), jnp.float64)
    check_grads(lambda x: hog.patch_hog(x, 4, 2), (images,), order=1, modes=["rev"],
                atol=1e-4, rtol=1e-4)
    flat = images.at[:, :4].set(0.)  # A zero-filled half.
    grad = jax.grad(lambda x: hog.patch_hog(x, 4, 2).sum())(flat)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_loss_counts_the_region_patches_only():
  k = jax.random.split(jax.random.PRNGKey(2), 2)
  clean = jax.random.normal(k[0], (2, 16, 16, 3))
  region = jnp.zeros((2, 16, 16, 1)).at[:, :8, :8].set(1.)  # The first patch of each image.
  restored = clean + jax.random.normal(k[1], clean.shape)
  trajectory = jnp.stack([clean, restored])
  loss, per_step = hog.restoration_loss(trajectory, clean, region, patch_size=8, cell_size=4,
                                        steps="last")
  assert float(per_step[0]) == 0. and float(per_step[1]) > 0.1
  np.testing.assert_allclose(loss, per_step[1])
  # Pixels two away from the region's patch do not reach its HOG (central differences).
  elsewhere = restored.at[:, 10:, 10:].add(5.)
  _, moved = hog.restoration_loss(elsewhere[None], clean, region, patch_size=8, cell_size=4)
  np.testing.assert_allclose(moved[0], per_step[1], rtol=1e-6)
  expected = jnp.mean(jnp.sum(jnp.square(hog.patch_hog(restored, 8, 4)[:, 0]
                                         - hog.patch_hog(clean, 8, 4)[:, 0]), -1))
  np.testing.assert_allclose(per_step[1], expected, rtol=1e-5)
