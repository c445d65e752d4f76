"""Every pretext task has its defining property; mixtures and compositions combine them."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from ebm_vision import models
from ebm_vision.data.patches import patchify
from ebm_vision.objectives import corruptions, energy_pretraining, train_step
from ebm_vision.objectives.corruptions import ImageSpec
from ebm_vision.run.optimizer import pretraining_optimizer, weight_decay_mask

MEAN, STD = (0.45, 0.4, 0.35), (0.25, 0.2, 0.3)
SPEC = ImageSpec(patch_size=4, pixel_mean=MEAN, pixel_std=STD)


def images(n=6, size=16, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, size, size, 3))


def to_pixels(x):
  return np.asarray(x) * np.asarray(STD) + np.asarray(MEAN)


def patch_region(region, patch_size=4):
  """[B, H, W, 1] pixel region -> [B, N] fraction of each patch inside it."""
  return np.asarray(patchify(region, patch_size)).mean(-1)


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_mask_covers_exactly_ratio_of_the_patches(ratio):
  out = corruptions.mask_patches(images(), jax.random.PRNGKey(1), SPEC, ratio=ratio)
  chex.assert_shape(out.region, (6, 16, 16, 1))
  chex.assert_type(out.region, jnp.float32)
  per_patch = patch_region(out.region)
  assert set(np.unique(per_patch)) <= {0., 1.}  # Each patch wholly masked or not.
  np.testing.assert_array_equal(per_patch.sum(-1), round(ratio * 16))


@pytest.mark.parametrize("fill", corruptions.MASK_FILLS)
def test_mask_keeps_visible_pixels_and_fills_masked_ones(fill):
  x = images(n=64)
  patch = jax.random.normal(jax.random.PRNGKey(3), (4, 4, 3))
  spec = SPEC._replace(mask_fill=patch)
  out = corruptions.mask_patches(x, jax.random.PRNGKey(2), spec, ratio=0.5, fill=fill)
  visible, masked = np.asarray(out.region[..., 0]) == 0, np.asarray(out.region[..., 0]) == 1
  np.testing.assert_array_equal(np.asarray(out.images)[visible], np.asarray(x)[visible])
  filled = np.asarray(out.images)[masked]
  if fill == "zeros":
    np.testing.assert_array_equal(filled, 0.)
  elif fill == "mean":
    means = np.broadcast_to(np.asarray(x).mean(axis=(1, 2), keepdims=True), x.shape)
    np.testing.assert_allclose(filled, means[masked], rtol=1e-5, atol=1e-6)
  elif fill == "learned":  # The learned patch in every masked patch.
    masked_patches = patchify(out.images, 4)[patch_region(out.region) == 1]
    np.testing.assert_array_equal(masked_patches, np.broadcast_to(
        np.asarray(patch).reshape(-1), masked_patches.shape))
  else:  # Fresh N(0, 1) noise, unrelated to the image.
    assert abs(filled.mean()) < 0.02 and abs(filled.std() - 1) < 0.02
    assert abs(np.corrcoef(filled.ravel(), np.asarray(x)[masked].ravel())[0, 1]) < 0.02


def test_learned_fill_needs_the_learned_patch():
  with pytest.raises(ValueError, match="mask_fill"):
    corruptions.mask_patches(images(), jax.random.PRNGKey(2), SPEC, fill="learned")


def test_learned_fill_trains_by_the_restoration_loss(tiny_config):
  """The patch starts at the mean colour and moves; the parameter gradient of the loss
  reaches it (directional finite differences) and AdamW does not decay it."""
  c = tiny_config
  c.corruption.mask.fill = "learned"
  c.model.drop_path_rate = 0.
  model = models.create_vit(c.model)
  tx, schedule = pretraining_optimizer(c)
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(state["params"]["mask_fill"], np.zeros((4, 4, 3)))
  assert not weight_decay_mask(state["params"])["mask_fill"]
  clean = images(n=8)
  keys = jax.random.split(jax.random.PRNGKey(5), 8)
  loss = lambda fill: energy_pretraining.loss({**state["params"], "mask_fill": fill}, clean,
                                              keys, model=model, config=c)[0]
  fill = 0.1 * jax.random.normal(jax.random.PRNGKey(6), (4, 4, 3))
  direction = jax.random.normal(jax.random.PRNGKey(7), (4, 4, 3))
  eps = 1e-2
  numeric = (loss(fill + eps * direction) - loss(fill - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(jnp.vdot(jax.grad(loss)(fill), direction), numeric, rtol=2e-2)
  batch = {"image": np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)}
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))
  for _ in range(2):  # The learning rate of the first step is 0 (warm-up).
    state, _ = step(state, batch)
  assert np.abs(np.asarray(state["params"]["mask_fill"])).max() > 0


def test_block_masking_masks_whole_blocks_of_patches():
  out = corruptions.mask_patches(images(), jax.random.PRNGKey(4), SPEC, ratio=0.5, block_size=2)
  per_patch = patch_region(out.region).reshape(6, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4)
  blocks = per_patch.reshape(6, 4, 4)  # [image, block, patch in block]
  assert set(np.unique(blocks)) <= {0., 1.}
  np.testing.assert_array_equal(blocks.min(-1), blocks.max(-1))  # A block is all in or out.
  np.testing.assert_array_equal(blocks[..., 0].sum(-1), 2)  # Half of the 4 blocks.
  with pytest.raises(ValueError, match="block_size 3 must divide"):
    corruptions.mask_patches(images(), jax.random.PRNGKey(4), SPEC, block_size=3)


def test_every_patch_is_masked_equally_often():
  masks = corruptions.random_patch_mask(jax.random.PRNGKey(3), 4000, 16, 0.25)
  np.testing.assert_allclose(np.asarray(masks).mean(0), 0.25, atol=0.03)


# ---------------------------------------------------------------- patch sorting
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_sorting_only_permutes_the_chosen_patches(ratio):
  x = images()
  out = corruptions.sort_patches(x, jax.random.PRNGKey(4), SPEC, ratio=ratio)
  before, after = np.asarray(patchify(x, 4)), np.asarray(patchify(out.images, 4))
  chosen = patch_region(out.region) == 1
  np.testing.assert_array_equal(chosen.sum(-1), round(ratio * 16))
  for i in range(x.shape[0]):
    # The multiset of patches is unchanged...
    np.testing.assert_array_equal(np.sort(before[i], axis=0), np.sort(after[i], axis=0))
    # ...patches outside the region stay, and every chosen patch moved.
    np.testing.assert_array_equal(after[i][~chosen[i]], before[i][~chosen[i]])
    assert not np.any(np.all(after[i][chosen[i]] == before[i][chosen[i]], axis=-1))


# ---------------------------------------------------------------- super-resolution
@pytest.mark.parametrize("down_method", corruptions.DOWNSAMPLE_METHODS)
def test_super_resolution_keeps_the_low_pass_content(down_method):
  x = images(n=8)
  out = corruptions.downsample(x, jax.random.PRNGKey(5), SPEC, factors=(4,),
                               down_method=down_method, up_method="bicubic")
  block_mean = lambda y: np.asarray(y).reshape(8, 4, 4, 4, 4, 3).mean(axis=(2, 4))
  low_error = np.abs(block_mean(out.images) - block_mean(x)).mean()
  high_error = np.abs(np.asarray(out.images) - np.asarray(x)).mean()
  assert low_error < 0.35 * high_error  # Coarse content kept, fine detail removed.
  assert np.asarray(out.images).std() < 0.6 * np.asarray(x).std()  # White noise loses its highs.
  np.testing.assert_array_equal(out.region, 1.)


def test_super_resolution_exact_for_area_down_and_nearest_up():
  x = images(n=4)
  out = corruptions.downsample(x, jax.random.PRNGKey(6), SPEC, factors=(2, 4),
                               down_method="area", up_method="nearest")
  for i in range(4):
    y = np.asarray(out.images[i])
    f = 4 if np.allclose(y[0, 0], y[0, 2]) else 2  # Which factor this image drew.
    blocks = np.asarray(x[i]).reshape(16 // f, f, 16 // f, f, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(y, blocks.repeat(f, 0).repeat(f, 1), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- denoising
def test_noise_statistics_match_sigma_in_pixel_units():
  x = images(n=256, size=32)
  out = corruptions.add_noise(x, jax.random.PRNGKey(7), SPEC, sigma_min=0.2, sigma_max=0.2)
  noise_pixels = to_pixels(out.images) - to_pixels(x)
  np.testing.assert_allclose(noise_pixels.std(axis=(0, 1, 2)), 0.2, rtol=0.02)
  assert abs(noise_pixels.mean()) < 0.002
  ranged = corruptions.add_noise(x, jax.random.PRNGKey(8), SPEC, sigma_min=0.05, sigma_max=0.3)
  per_image = (to_pixels(ranged.images) - to_pixels(x)).std(axis=(1, 2, 3))
  assert 0.04 < per_image.min() < 0.08 and 0.27 < per_image.max() < 0.31


# ---------------------------------------------------------------- colorization
def test_colorization_has_equal_channels_and_keeps_luminance():
  x = images()
  out = corruptions.grayscale(x, jax.random.PRNGKey(9), SPEC)
  gray = to_pixels(out.images)
  np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-5)
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-5)
  luma = to_pixels(x) @ np.asarray(corruptions.LUMA_WEIGHTS)
  np.testing.assert_allclose(gray[..., 0], luma, atol=1e-5)


# ---------------------------------------------------------------- combinations
def test_mix_gives_each_image_one_task():
  c = common.get_pretraining_config().corruption
  c.name, c.mix.tasks, c.mix.weights = "mix", ("color", "sort"), (1., 1.)
  x = images(n=64)
  out = corruptions.corrupt(x, jax.random.PRNGKey(10), c, SPEC)
  pix = to_pixels(out.images)
  is_gray = np.all(np.abs(pix[..., 0] - pix[..., 1]) < 1e-5, axis=(1, 2))
  is_sorted = np.array([np.array_equal(np.sort(a, 0), np.sort(b, 0)) for a, b in zip(
      np.asarray(patchify(out.images, 4)), np.asarray(patchify(x, 4)))])
  np.testing.assert_array_equal(is_gray, ~is_sorted)  # Exactly one task per image...
  assert 16 < is_gray.sum() < 48  # ...and both tasks occur...
  np.testing.assert_array_equal(  # ...each named by `task`.
      out.task, np.where(is_gray, corruptions.TASKS.index("color"), corruptions.TASKS.index("sort")))
  keys = jax.random.split(jax.random.PRNGKey(10), 64)
  np.testing.assert_array_equal(  # One key per image keeps the per-image task.
      corruptions.corrupt_each(x, keys, c, SPEC).task,
      [corruptions.corrupt(x[i:i + 1], k, c, SPEC).task[0] for i, k in enumerate(keys)])
  c.mix.weights = (0., 1.)
  out = corruptions.corrupt(x, jax.random.PRNGKey(10), c, SPEC)
  assert not np.any(np.all(np.abs(to_pixels(out.images)[..., 0] - to_pixels(out.images)[..., 1])
                           < 1e-5, axis=(1, 2)))


def test_compose_applies_all_tasks_with_the_union_region():
  c = common.get_pretraining_config().corruption
  c.name, c.compose.tasks = "compose", ("mask", "color")
  c.mask.fill = "zeros"
  out = corruptions.corrupt(images(), jax.random.PRNGKey(11), c, SPEC)
  np.testing.assert_array_equal(out.region, 1.)  # Colour covers everything.
  pix = to_pixels(out.images)
  np.testing.assert_allclose(pix[..., 0], pix[..., 2], atol=1e-5)  # Gray after masking.
  np.testing.assert_array_equal(out.task, -1)  # No single task.
  c.name = "sr"
  np.testing.assert_array_equal(corruptions.corrupt(images(), jax.random.PRNGKey(11), c, SPEC).task,
                                corruptions.TASKS.index("sr"))


# ---------------------------------------------------------------- train step
@pytest.mark.slow
@pytest.mark.parametrize("task", [*corruptions.CORRUPTIONS, *corruptions.COMBINATIONS])
def test_train_step_runs_with_every_task(tiny_config, task):
  c = tiny_config
  c.corruption.name = task
  model = models.create_vit(c.model)
  tx, schedule = pretraining_optimizer(c)
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  batch = {"image": np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)}
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))
  kernel = np.asarray(state["params"]["model"]["embedding"]["kernel"])
  for _ in range(2):  # The learning rate of the first step is 0 (warm-up).
    state, metrics = step(state, batch)
    assert np.isfinite(metrics["loss"]) and float(metrics["loss"]) > 0
    assert float(metrics["grad_norm"]) > 0
  assert not np.allclose(state["params"]["model"]["embedding"]["kernel"], kernel)
