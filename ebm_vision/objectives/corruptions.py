"""Corruptions: the pretext tasks.

Every corruption is a pure function `fn(images, rng, spec, **options)` of
normalized float images [B, H, W, C] that returns a `Corrupted`: the corrupted
images and the region [B, H, W, 1] (1 = corrupted) that the restoration may
update and the loss may cover. `spec` carries what some tasks need to know of
the images (patch size, pixel normalization). A new pretext task is one more
function in `CORRUPTIONS`; the network does not change.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from ebm_vision.data.patches import patchify, unpatchify

MASK_FILLS = ("noise", "zeros", "mean", "learned")
DOWNSAMPLE_METHODS = ("area", "bilinear", "bicubic")
UPSAMPLE_METHODS = ("nearest", "bilinear", "bicubic")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance.
COMBINATIONS = ("mix", "compose")  # corruption.name values that combine several tasks.


class ImageSpec(NamedTuple):
  """What corruptions need to know of the images they corrupt."""
  patch_size: int
  pixel_mean: Sequence[float]  # Per-channel mean of [0, 1] pixels used to normalize.
  pixel_std: Sequence[float]  # Per-channel std of [0, 1] pixels used to normalize.
  mask_fill: Optional[jnp.ndarray] = None  # [p, p, C] learned patch of mask fill 'learned'.


class Corrupted(NamedTuple):
  images: jnp.ndarray  # [B, H, W, C] corrupted images.
  region: jnp.ndarray  # [B, H, W, 1] float32, 1 where the image was corrupted.
  task: Optional[jnp.ndarray] = None  # [B] int32 index into TASKS (-1: 'compose'); set by `corrupt`.


def _everywhere(images) -> jnp.ndarray:
  return jnp.ones(images.shape[:-1] + (1,), jnp.float32)


def random_patch_mask(rng: jax.Array, batch: int, num_patches: int,
                      ratio: float) -> jnp.ndarray:
  """[batch, num_patches] booleans with exactly round(ratio·num_patches) True per row."""
  num_masked = int(round(ratio * num_patches))
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, num_patches)), -1), -1)
  return ranks < num_masked


def mask_patches(images, rng, spec: ImageSpec, *, ratio: float = 0.75,
                 fill: str = "noise", block_size: int = 1) -> Corrupted:
  """Masked image modeling: replaces a random `ratio` of the patches.

  fill: 'noise' (standard normal, i.e. the data's per-channel spread),
  'zeros' (the data-set mean colour, as images are normalized), 'mean'
  (each image's own mean colour) or 'learned' (`spec.mask_fill`, a learned patch in
  pixel space, in every masked patch: SimMIM's mask token before the patch embedding).
  block_size: patches are masked in square blocks of block_size × block_size patches
  (1 = each patch on its own), so that a masked patch's neighbours are masked too
  (SimMIM's larger mask patches).
  """
  b, h, w, _ = images.shape
  mask_rng, fill_rng = jax.random.split(rng)
  grid_h, grid_w = h // spec.patch_size, w // spec.patch_size
  if grid_h % block_size or grid_w % block_size:
    raise ValueError(f"mask block_size {block_size} must divide the patch grid "
                     f"{grid_h}×{grid_w}")
  rows, cols = grid_h // block_size, grid_w // block_size
  block_mask = random_patch_mask(mask_rng, b, rows * cols, ratio).reshape(b, rows, cols)
  block = spec.patch_size * block_size
  region = jnp.repeat(jnp.repeat(block_mask, block, axis=1), block, axis=2)
  region = region[..., None].astype(jnp.float32)
  if fill == "noise":
    filler = jax.random.normal(fill_rng, images.shape, images.dtype)
  elif fill == "zeros":
    filler = jnp.zeros_like(images)
  elif fill == "mean":
    filler = jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
  elif fill == "learned":
    if spec.mask_fill is None:
      raise ValueError("mask fill 'learned' needs the learned patch in ImageSpec.mask_fill")
    filler = jnp.broadcast_to(jnp.tile(spec.mask_fill, (grid_h, grid_w, 1)),
                              images.shape).astype(images.dtype)
  else:
    raise ValueError(f"mask fill {fill!r} is not one of {MASK_FILLS}")
  return Corrupted(images=jnp.where(region > 0, filler, images), region=region)


def sort_patches(images, rng, spec: ImageSpec, *, ratio: float = 0.5) -> Corrupted:
  """Patch sorting: a random `ratio` of the patches trade places; the rest stay.

  The chosen patches are moved along one random cycle, so every chosen patch
  leaves its position (when two or more are chosen). The region is the chosen
  positions.
  """
  patches = patchify(images, spec.patch_size)
  b, n, _ = patches.shape
  k = int(round(ratio * n))
  choose_rng, order_rng = jax.random.split(rng)
  chosen = random_patch_mask(choose_rng, b, n, ratio)
  keys = jax.random.uniform(order_rng, (b, n))
  # Chosen positions first, in random order; then the others in place order.
  order = jnp.argsort(jnp.where(chosen, keys, 2. + jnp.arange(n)), axis=-1)
  source = jnp.concatenate([jnp.roll(order[:, :k], -1, axis=-1), order[:, k:]], axis=-1)
  gather = jnp.take_along_axis(source, jnp.argsort(order, axis=-1), axis=-1)
  shuffled = jnp.take_along_axis(patches, gather[..., None], axis=1)
  region = jnp.broadcast_to(chosen[..., None], (b, n, spec.patch_size**2)).astype(jnp.float32)
  return Corrupted(unpatchify(shuffled, images.shape, spec.patch_size),
                   unpatchify(region, images.shape[:-1] + (1,), spec.patch_size))


def _resize(images, size, method):
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, size[0], size[1], c), method=method, antialias=True)


def downsample(images, rng, spec: ImageSpec, *, factors: Sequence[int] = (2, 4),
               down_method: str = "area", up_method: str = "bicubic") -> Corrupted:
  """Super-resolution: down-sample by a factor drawn per image from `factors`, up-sample back."""
  del spec
  b, h, w, c = images.shape
  outs = []
  for f in factors:
    if down_method == "area":
      small = images.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))
    else:
      small = _resize(images, (h // f, w // f), down_method)
    outs.append(_resize(small, (h, w), up_method))
  pick = jax.random.randint(rng, (b,), 0, len(factors))
  out = jnp.take_along_axis(jnp.stack(outs, 1), pick[:, None, None, None, None], axis=1)[:, 0]
  return Corrupted(out, _everywhere(images))


def add_noise(images, rng, spec: ImageSpec, *, sigma_min: float = 0.05,
              sigma_max: float = 0.3) -> Corrupted:
  """Denoising: Gaussian noise of std σ ~ U[sigma_min, sigma_max] in [0, 1] pixel units."""
  sigma_rng, noise_rng = jax.random.split(rng)
  sigma = jax.random.uniform(sigma_rng, (images.shape[0], 1, 1, 1), minval=sigma_min,
                             maxval=sigma_max)
  noise = jax.random.normal(noise_rng, images.shape) * sigma / jnp.asarray(spec.pixel_std)
  return Corrupted(images + noise.astype(images.dtype), _everywhere(images))


def grayscale(images, rng, spec: ImageSpec) -> Corrupted:
  """Colorization: the image's luminance replicated to all channels (in pixel space)."""
  del rng
  mean, std = jnp.asarray(spec.pixel_mean), jnp.asarray(spec.pixel_std)
  luma = jnp.sum((images * std + mean) * jnp.asarray(LUMA_WEIGHTS), axis=-1, keepdims=True)
  return Corrupted(((luma - mean) / std).astype(images.dtype), _everywhere(images))


# name -> corruption function; config.corruption.<name> holds its options.
CORRUPTIONS = {
    "mask": mask_patches,
    "sort": sort_patches,
    "sr": downsample,
    "denoise": add_noise,
    "color": grayscale,
}
TASKS = tuple(CORRUPTIONS)  # Single tasks, in the order of `Corrupted.task`.


def apply_task(name: str, images, rng, corruption_config, spec: ImageSpec) -> Corrupted:
  """One named corruption with its options from `corruption_config.<name>`."""
  options = dict(corruption_config.get(name, None) or {})
  return CORRUPTIONS[name](images, rng, spec, **options)


def corrupt_each(images, keys, corruption_config, spec: ImageSpec) -> Corrupted:
  """`corrupt` with one key per image (keys [B]): an image's corruption depends on its own
  key alone, so a batch split into micro-batches is corrupted as the whole batch is."""
  one = lambda x, k: corrupt(x[None], k, corruption_config, spec)
  out = jax.vmap(one)(images, keys)
  return Corrupted(out.images[:, 0], out.region[:, 0], out.task[:, 0])


def corrupt(images, rng, corruption_config, spec: ImageSpec) -> Corrupted:
  """Applies `corruption_config.name`: one task, or a 'mix' / 'compose' of several.

  'mix': each image gets one task of `mix.tasks`, drawn with `mix.weights`.
  'compose': every image gets all of `compose.tasks` in order; the region is
  their union. `Corrupted.task` says which task each image got.
  """
  name = corruption_config.name
  batch = images.shape[0]
  if name == "mix":
    tasks, weights = corruption_config.mix.tasks, corruption_config.mix.weights
    keys = jax.random.split(rng, len(tasks) + 1)
    outs = [apply_task(t, images, k, corruption_config, spec) for t, k in zip(tasks, keys)]
    p = jnp.asarray(weights, jnp.float32) / sum(weights)
    pick = jax.random.choice(keys[-1], len(tasks), (batch,), p=p)
    select = lambda xs: jnp.take_along_axis(
        jnp.stack(xs, 1), pick[:, None, None, None, None], axis=1)[:, 0]
    task = jnp.asarray([TASKS.index(t) for t in tasks], jnp.int32)[pick]
    return Corrupted(select([o.images for o in outs]), select([o.region for o in outs]), task)
  if name == "compose":
    region = jnp.zeros(images.shape[:-1] + (1,), jnp.float32)
    for task, key in zip(corruption_config.compose.tasks,
                         jax.random.split(rng, len(corruption_config.compose.tasks))):
      out = apply_task(task, images, key, corruption_config, spec)
      images, region = out.images, jnp.maximum(region, out.region)
    return Corrupted(images, region, jnp.full((batch,), -1, jnp.int32))
  out = apply_task(name, images, rng, corruption_config, spec)
  return out._replace(task=jnp.full((batch,), TASKS.index(name), jnp.int32))
