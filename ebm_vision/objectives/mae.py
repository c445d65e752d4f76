"""MAE (He et al., 2022), the baseline of the comparison, in the same codebase.

The objective of config.method='mae', with the interface of `energy_pretraining`
(`init_params`, `loss`, `diagnostics`). The encoder is the same ViT as energy pretraining's, run on the visible patches only
(`token_ids`); a light transformer decoder predicts the pixels of the masked patches,
and the loss is MAE's: squared error on the masked patches, in units of each clean
patch's standard deviation when `loss.norm_pix`. The mask ratio is
`corruption.mask.ratio` (0.75). Input pipeline, optimizer, train step, checkpoints and
transfer are shared, so a comparison changes the objective alone. The train state's
params are {'model': the ViT (what transfer loads), 'decoder': MAE's decoder}.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ebm_vision.data import pixels
from ebm_vision.data.patches import patch_statistics, patchify, unpatchify
from ebm_vision.models.vit import Encoder, sincos2d_posemb
from ebm_vision.objectives import image_metrics


class Decoder(nn.Module):
  """Encoded visible tokens + mask tokens -> predicted pixels of every patch [B, N, p·p·3]."""
  width: int
  depth: int
  num_heads: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, encoded, ids_restore, grid):
    x = nn.Dense(self.width, dtype=self.dtype, name="embed")(encoded)
    b, num_visible, _ = x.shape
    num_patches = ids_restore.shape[1]
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    x = jnp.concatenate(
        [x, jnp.tile(mask_token.astype(x.dtype), (b, num_patches - num_visible, 1))], axis=1)
    x = jnp.take_along_axis(x, ids_restore[..., None], axis=1)  # Back to image order.
    x = x + sincos2d_posemb(grid, self.width).astype(x.dtype)
    _, x = Encoder(self.depth, 4 * self.width, self.num_heads, dtype=self.dtype,
                   name="Transformer")(x, deterministic=True)
    return nn.Dense(self.patch_size**2 * 3, name="pred")(x).astype(jnp.float32)


def create_decoder(config, model) -> Decoder:
  """MAE's decoder as `config.mae` describes it, for the ViT `model`."""
  return Decoder(config.mae.decoder_width, config.mae.decoder_depth,
                 config.mae.decoder_num_heads, model.patch_size, dtype=model.dtype)


def random_masking(keys: jax.Array, num_patches: int, ratio: float):
  """Per-image uniform random masking of round(ratio · N) patches, one key per image.

  Returns (ids_keep [B, n_visible] in shuffled order, mask [B, N] with 1 on masked
  patches, ids_restore [B, N] that undoes the shuffle).
  """
  batch_size = keys.shape[0]
  num_visible = num_patches - int(round(ratio * num_patches))
  noise = jax.vmap(lambda k: jax.random.uniform(k, (num_patches,)))(keys)
  ids_shuffle = jnp.argsort(noise, axis=1)
  ids_restore = jnp.argsort(ids_shuffle, axis=1)
  mask = jnp.ones((batch_size, num_patches)).at[:, :num_visible].set(0.)
  return ids_shuffle[:, :num_visible], jnp.take_along_axis(mask, ids_restore, axis=1), ids_restore


def init_params(model: nn.Module, config, rng: jax.Array) -> dict:
  """Initial parameters of the ViT encoder and of the decoder."""
  size = config.data.image_size
  model_rng, decoder_rng = jax.random.split(rng)
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  grid = (size // model.patch_size,) * 2
  ids = jnp.arange(grid[0] * grid[1])[None]
  variables = model.init(model_rng, images, train=False)
  encoded = model.apply(variables, images)["encoded"]
  decoder = create_decoder(config, model)
  return {"model": variables["params"],
          "decoder": decoder.init(decoder_rng, encoded, ids, grid)["params"]}


def reconstruct(params, clean, keys, *, model: nn.Module, config, train: bool):
  """Masks `clean` (normalized images; one key each), encodes the visible patches and
  decodes all.

  Returns (predicted patches [B, N, p·p·3] in target units, mask [B, N], targets).
  """
  split = jax.vmap(jax.random.split)(keys)
  mask_keys, dropout_rng = split[:, 0], split[0, 1]
  _, h, w, _ = clean.shape
  p = model.patch_size
  ids_keep, mask, ids_restore = random_masking(mask_keys, (h // p) * (w // p),
                                               config.corruption.mask.ratio)
  encoded = model.apply({"params": params["model"]}, clean, train=train, token_ids=ids_keep,
                        rngs={"dropout": dropout_rng} if train else {})["encoded"]
  pred = create_decoder(config, model).apply({"params": params["decoder"]}, encoded,
                                             ids_restore, (h // p, w // p))
  target = patchify(clean, p)
  if config.loss.norm_pix:
    mean, std = patch_statistics(target, 1e-6)
    target = (target - mean) / std
  return pred, mask, target


def loss(params, clean, keys, *, model: nn.Module, config):
  """MAE's loss: mean squared error over the masked patches (one key per image)."""
  pred, mask, target = reconstruct(params, clean, keys, model=model, config=config, train=True)
  per_patch = jnp.mean(jnp.square(pred - target), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.maximum(mask.sum(), 1.), {}


def diagnostics(params, images, rng, *, model: nn.Module, config, corruption_config=None):
  """`image_metrics.restoration_metrics` of MAE's one reconstruction (K = 1, no energies).

  Only MAE's own masking is measured (`corruption_config` must be None or 'mask'). The
  corrupted images have zeros (the mean colour) on masked patches; the restored ones
  paste the predicted patches, mapped back to pixels with each clean patch's mean and
  std when `loss.norm_pix`, into the visible ones.
  """
  if corruption_config is not None and corruption_config.name != "mask":
    raise ValueError(f"MAE restores masked patches only, not {corruption_config.name!r}")
  clean = pixels.normalize(images, config.data.pixel_mean, config.data.pixel_std)
  pred, mask, _ = reconstruct(params, clean, jax.random.split(rng, clean.shape[0]),
                              model=model, config=config, train=False)
  p = model.patch_size
  patches = patchify(clean, p)
  if config.loss.norm_pix:
    mean, std = patch_statistics(patches, 1e-6)
    pred = pred * std + mean
  region = unpatchify(jnp.broadcast_to(mask[..., None], patches.shape), clean.shape, p)
  restored = jnp.where(region > 0, unpatchify(pred, clean.shape, p), clean)
  return image_metrics.restoration_metrics(clean, clean * (1. - region), region[..., :1],
                                           restored[None], config.data.pixel_mean,
                                           config.data.pixel_std)
