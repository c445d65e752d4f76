"""PSNR and SSIM against values computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np

from ebm_vision.objectives import image_metrics


def test_psnr_of_a_constant_offset():
  a = jnp.full((2, 16, 16, 3), 0.5)
  np.testing.assert_allclose(image_metrics.psnr(a, a + 0.1), [20., 20.], rtol=1e-5)


def test_ssim_of_identical_and_shifted_flat_images():
  a = jax.random.uniform(jax.random.PRNGKey(0), (2, 24, 24, 3))
  np.testing.assert_allclose(image_metrics.ssim(a, a), 1., rtol=1e-5)
  flat, shifted = jnp.full((1, 16, 16, 1), 0.5), jnp.full((1, 16, 16, 1), 0.6)
  c1 = 0.01**2  # Only the luminance term differs from 1 for flat images.
  expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
  # float32 filtering leaves a variance of ~1e-7 on flat images: 1e-4 of the value.
  np.testing.assert_allclose(image_metrics.ssim(flat, shifted), [expected], rtol=3e-4)


def test_ssim_falls_with_noise():
  a = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3))
  noise = jax.random.normal(jax.random.PRNGKey(1), a.shape)
  ssims = [float(image_metrics.ssim(a, a + s * noise)[0]) for s in (0.01, 0.1, 0.3)]
  assert 1 > ssims[0] > ssims[1] > ssims[2] > 0
