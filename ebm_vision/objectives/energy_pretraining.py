"""The energy objective (config.method='energy'): corrupt, restore by descent on E, compare.

Parameters: {'model': ViT params, 'restore': {'raw_step_size': [K]}}, for a read-out
with parameters 'readout', and with `corruption.mask.fill='learned'` 'mask_fill' (the
learned patch [p, p, 3], trained by the loss like the rest, not part of the energy).
The objective's interface, shared with `mae`: `init_params`, `loss`, `diagnostics`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ebm_vision.data import pixels
from ebm_vision.objectives import corruptions, energy, hog, image_metrics


def init_params(model: nn.Module, config, rng: jax.Array) -> dict:
  """Initial ViT parameters, restoration step sizes, and the learned mask fill and
  read-out parameters (if any)."""
  size = config.data.image_size
  model_params = model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32),
                            train=False)["params"]
  raw = energy.raw_step_size_init(config.restore.init_step_size, config.restore.num_steps)
  params = {"model": model_params, "restore": {"raw_step_size": raw}}
  if config.corruption.mask.fill == "learned":  # Starts as the data-set mean colour.
    params["mask_fill"] = jnp.zeros((model.patch_size, model.patch_size, 3), jnp.float32)
  readout = energy.init_readout(config.energy.readout, model.width, jax.random.fold_in(rng, 1),
                                model.patch_size)
  return {**params, "readout": readout} if readout else params


def energy_fn(model: nn.Module, config, dropout_rng: Optional[jax.Array] = None,
              token_weights: Optional[jnp.ndarray] = None):
  """(energy params, images) -> energies [B]; drop path is active iff `dropout_rng` is given."""
  return functools.partial(energy.energy, model, readout=config.energy.readout,
                           dropout_rng=dropout_rng, token_weights=token_weights)


def energy_params(params) -> dict:
  """The parameters the energy depends on: the ViT's and the read-out's (if any)."""
  return {k: v for k, v in params.items() if k in ("model", "readout")}


def image_spec(model: nn.Module, config, params) -> corruptions.ImageSpec:
  """Patch size, pixel normalization and learned mask fill, as the corruptions need them."""
  return corruptions.ImageSpec(model.patch_size, tuple(config.data.pixel_mean),
                               tuple(config.data.pixel_std), params.get("mask_fill"))


class Restoration(NamedTuple):
  """A corrupted batch and its restoration."""
  corrupted: corruptions.Corrupted  # x_0 and the corrupted region.
  trajectory: jnp.ndarray  # [K, B, H, W, C]: x_1 .. x_K.
  energies: jnp.ndarray  # [K, B]: E(x_0) .. E(x_{K-1}).
  step_sizes: jnp.ndarray  # [K]: α_1 .. α_K.
  energy: Callable[[jnp.ndarray], jnp.ndarray]  # images -> E [B], with the same parameters.


def corrupt_and_restore(model: nn.Module, config, params, clean, keys, *, train: bool,
                        corruption_config=None, step_sizes=None) -> Restoration:
  """Corrupts normalized `clean` with `corruption_config` (default: the pretext task) and
  restores it by `config.restore.num_steps` steps of descent on the energy.

  keys [B]: one per image, for its corruption and Langevin noise (drop path draws from
  the first). step_sizes: [K'] step sizes that replace the learned ones, K' steps (test-time
  probes of the descent; see benchmarks/descent_probe.py).
  """
  split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
  corrupt_keys, restore_keys, dropout_rng = split[:, 0], split[:, 1], split[0, 2]
  corrupted = corruptions.corrupt_each(clean, corrupt_keys,
                                       corruption_config or config.corruption,
                                       image_spec(model, config, params))
  if train and config.corruption.clean_image_fraction:
    corrupted = keep_clean_images(corrupted, clean, corrupt_keys,
                                  config.corruption.clean_image_fraction)
  raw = params["restore"]["raw_step_size"]
  if not config.restore.learn_step_size:
    raw = jax.lax.stop_gradient(raw)
  alphas = energy.step_sizes(raw) if step_sizes is None else jnp.asarray(step_sizes)
  r = config.restore
  descent_alphas = alphas
  if train and r.step_size_jitter:
    jitter_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(restore_keys)
    descent_alphas = energy.jitter_step_sizes(alphas, jitter_keys, r.step_size_jitter)
  weights = energy.token_weights(config.energy.tokens, corrupted.region, model.patch_size)
  efn = energy_fn(model, config, dropout_rng if train else None, weights)
  trajectory, energies = energy.restore(
      efn, energy_params(params), corrupted.images, descent_alphas, restore_keys,
      update_mask=corrupted.region if r.update_region == "corrupted" else None,
      langevin_noise_scale=r.langevin_noise_scale,
      interstep_noise_scale=r.interstep_noise_scale if train else 0., remat=r.remat,
      second_order=r.second_order, unroll=r.unroll_steps,
      step_normalization=r.step_normalization)
  return Restoration(corrupted, trajectory, energies, alphas,
                     functools.partial(efn, energy_params(params)))


def data_step_size(params, clean, keys, *, model: nn.Module, config) -> jnp.ndarray:
  """The α at which the first restoration step moves the corrupted pixels of normalized
  `clean` (one key each) by their RMS distance to the clean image: RMS(x − x₀) / RMS of the
  step at α = 1, over the batch's corrupted region, without drop path or Langevin noise.

  Starting every α there makes the first step as long as the error it has to undo,
  whatever the model's size and initialization (`restore.init_step_size_from_data`).
  """
  probe = config.copy_and_resolve_references()
  probe.restore.langevin_noise_scale = 0.
  r = corrupt_and_restore(model, probe, params, clean, keys, train=False,
                          step_sizes=jnp.ones((1,), jnp.float32))
  region = r.corrupted.region
  sum_of_squares = lambda x: jnp.sum(jnp.square(x) * region)
  return jnp.sqrt(sum_of_squares(clean - r.corrupted.images) /
                  jnp.maximum(sum_of_squares(r.corrupted.images - r.trajectory[0]), 1e-30))


def keep_clean_images(corrupted: corruptions.Corrupted, clean: jnp.ndarray, keys: jax.Array,
                      fraction: float) -> corruptions.Corrupted:
  """Gives each image, with probability `fraction` (its own key), back its clean pixels.

  The corrupted region stays, so the descent moves and the loss scores those pixels: a
  clean image must stay where it is (a stationary point of E), and the network sees
  uncorrupted images, as fine-tuning does (BERT's unchanged masked tokens, per image).
  """
  keep = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 2), fraction))(keys)
  return corrupted._replace(images=jnp.where(keep[:, None, None, None], clean,
                                             corrupted.images))


def plain_pixel_images(config, task: jnp.ndarray) -> Optional[jnp.ndarray]:
  """[B] bools: images whose task is one of `loss.plain_pixel_tasks` (None if there are none).

  Images of a 'compose' (several tasks each) follow `loss.norm_pix`.
  """
  if not config.loss.plain_pixel_tasks:
    return None
  return jnp.isin(task, jnp.asarray([corruptions.TASKS.index(t)
                                     for t in config.loss.plain_pixel_tasks]))


def norm_pix_cell_size(config, model: nn.Module) -> int:
  """Side of the square cells the pixel loss standardizes one by one (`loss.norm_pix`); the
  patch in configs recorded before the field existed."""
  return config.loss.get("norm_pix_cell_size", 0) or model.patch_size


def loss(params, clean, keys, *, model: nn.Module, config):
  """Restoration loss of a batch of normalized clean images (one key each), with metrics.

  `loss.target`: 'pixels' (`energy.restoration_loss`), 'hog' (`hog.restoration_loss`), or
  'pixels_and_hog', the pixel loss plus `loss.hog_weight` × the HOG loss, on the same
  region and steps, aux['hog_loss_per_step'] the HOG term's unweighted [K].

  With `loss.energy_ranking_weight` > 0 it adds the ranking term of
  `energy.energy_ranking_loss`: the clean image must have lower energy than the
  corrupted one and every restored one.
  """
  r = corrupt_and_restore(model, config, params, clean, keys, train=True)
  region = r.corrupted.region if config.loss.region == "corrupted" else jnp.ones_like(
      r.corrupted.region)
  aux = {}
  if config.loss.target != "hog":
    total, per_step = energy.restoration_loss(
        r.trajectory, clean, region, loss_type=config.loss.type, steps=config.loss.steps,
        patch_size=norm_pix_cell_size(config, model) if config.loss.norm_pix else None,
        patch_stats=config.loss.norm_pix_stats, patch_eps=config.loss.norm_pix_eps,
        plain_images=plain_pixel_images(config, r.corrupted.task))
  if config.loss.target != "pixels":
    hog_total, hog_per_step = hog.restoration_loss(r.trajectory, clean, region,
                                                   patch_size=model.patch_size,
                                                   cell_size=config.loss.hog_cell_size,
                                                   steps=config.loss.steps)
    if config.loss.target == "hog":
      total, per_step = hog_total, hog_per_step
    else:
      weight = config.loss.hog_weight
      total, per_step = total + weight * hog_total, per_step + weight * hog_per_step
      aux["hog_loss_per_step"] = hog_per_step
  aux.update(loss_per_step=per_step, step_size=r.step_sizes,
             energy_per_step=r.energies.mean(axis=1))
  if config.loss.energy_ranking_weight:
    num_tokens = (clean.shape[1] // model.patch_size) * (clean.shape[2] // model.patch_size)
    others = jnp.concatenate([r.energies, r.energy(r.trajectory[-1])[None]])  # x_0 .. x_K.
    ranking = energy.energy_ranking_loss(r.energy(clean), others, scale=num_tokens)
    total = total + config.loss.energy_ranking_weight * ranking
    aux["energy_ranking"] = ranking
  return total, aux


def diagnostics(params, images, rng, *, model: nn.Module, config,
                corruption_config=None, step_sizes=None) -> dict[str, Any]:
  """Corrupts and restores uint8 `images` without drop path and measures the result
  (`step_sizes` as in `corrupt_and_restore`).

  Returns the images and metrics of `image_metrics.restoration_metrics`, and the batch
  mean energies `energy_clean`, `energy_corrupted` and `energy_restored` [K]. With
  `loss.norm_pix` and `loss.norm_pix_stats='own'` (a loss blind to each patch's mean and
  contrast) the restored patches of the corrupted region (of images whose task is not in
  `loss.plain_pixel_tasks`) are measured and shown with the clean patches' mean and
  contrast (`energy.match_patch_statistics`), as MAE's are, and `unmatched_mse_restored`
  [K] is the masked MSE of the descent's own pixels. `step_length`, `step_length_min` and
  `step_length_max` [K]: the batch mean, least and largest of each image's root mean square
  move of step k over the corrupted region (the descent's own pixels).
  """
  clean = pixels.normalize(images, config.data.pixel_mean, config.data.pixel_std)
  r = corrupt_and_restore(model, config, params, clean,
                          jax.random.split(rng, clean.shape[0]), train=False,
                          corruption_config=corruption_config, step_sizes=step_sizes)
  starts = jnp.concatenate([r.corrupted.images[None], r.trajectory[:-1]])
  lengths = jax.vmap(lambda start, end: energy.rms_over_mask(end - start, r.corrupted.region)
                     )(starts, r.trajectory)[..., 0, 0, 0]  # [K, B]
  restored, extra = r.trajectory, {"step_length": lengths.mean(1),
                                   "step_length_min": lengths.min(1),
                                   "step_length_max": lengths.max(1)}
  if config.loss.norm_pix and config.loss.norm_pix_stats == "own":
    match = functools.partial(energy.match_patch_statistics, reference=clean,
                              patch_size=norm_pix_cell_size(config, model),
                              eps=config.loss.norm_pix_eps)
    matched = r.corrupted.region > 0
    plain = plain_pixel_images(config, r.corrupted.task)
    if plain is not None:
      matched &= ~plain[:, None, None, None]
    restored = jnp.where(matched, jax.vmap(match)(restored), restored)
    extra["unmatched_mse_restored"] = jax.vmap(  # [K], the descent's own pixels.
        lambda x: image_metrics.region_mse(x, clean, r.corrupted.region))(r.trajectory)
  return {**extra, **image_metrics.restoration_metrics(
              clean, r.corrupted.images, r.corrupted.region, restored,
              config.data.pixel_mean, config.data.pixel_std),
          "energy_clean": r.energy(clean).mean(), "energy_corrupted": r.energies[0].mean(),
          "energy_restored": jax.vmap(lambda x: r.energy(x).mean())(r.trajectory)}
