"""Pure functions of energy-inspired pretraining: init, loss, train step, diagnostics.

The train state is a plain dict {'step', 'params', 'opt_state', 'rng'}; the
trainable parameters are {'model': ViT params, 'restore': {'raw_step_size': [K]}}
(with `config.method='mae'`, the MAE baseline's {'model', 'decoder'}: see
`ebm_vision.baselines.mae`).
Randomness of step t comes from fold_in(state['rng'], t), so a resumed run draws
the same corruptions and noise as an uninterrupted one.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ebm_vision import corruptions, energy, image_metrics, partitioning, pixels
from ebm_vision import mesh as mesh_lib
from ebm_vision.baselines import mae


def init_params(model: nn.Module, config, rng: jax.Array) -> dict:
  """Initial parameters of the ViT and of the restoration step sizes (or MAE's decoder)."""
  if config.method == "mae":
    return mae.init_params(model, config, rng)
  size = config.data.image_size
  dummy = jnp.zeros((1, size, size, 3), jnp.float32)
  model_params = model.init(rng, dummy, train=False)["params"]
  raw = energy.raw_step_size_init(config.restore.init_step_size, config.restore.num_steps)
  return {"model": model_params, "restore": {"raw_step_size": raw}}


def init_state(model: nn.Module, tx: optax.GradientTransformation, config,
               rng: jax.Array) -> dict:
  """The full train state at step 0."""
  init_rng, state_rng = jax.random.split(rng)
  params = init_params(model, config, init_rng)
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": tx.init(params), "rng": state_rng}


def energy_fn(model: nn.Module, config):
  """(energy params {'model', 'dropout'}, images) -> energies [B]; drop path is active iff
  the params hold a 'dropout' key."""
  def fn(energy_params, images):
    return energy.energy(model, energy_params["model"], images, readout=config.energy.readout,
                         dropout_rng=energy_params.get("dropout"))
  return fn


def image_spec(model: nn.Module, config) -> corruptions.ImageSpec:
  """Patch size and pixel normalization, as the corruptions need them."""
  return corruptions.ImageSpec(model.patch_size, tuple(config.data.pixel_mean),
                               tuple(config.data.pixel_std))


def corrupt_and_restore(model: nn.Module, config, params, clean, rng, *, train: bool,
                        corruption_config=None):
  """Corrupts `clean` (normalized) and restores it.

  `corruption_config` defaults to `config.corruption` (the pretext task).
  Returns (corrupted, trajectory [K, ...], energies [K, B] of x_0..x_{K-1},
  step sizes [K], the energy function used, with its drop-path draw).
  """
  corrupt_rng, restore_rng, dropout_rng = jax.random.split(rng, 3)
  corrupted = corruptions.corrupt(clean, corrupt_rng, corruption_config or config.corruption,
                                  image_spec(model, config))
  raw = params["restore"]["raw_step_size"]
  if not config.restore.learn_step_size:
    raw = jax.lax.stop_gradient(raw)
  alphas = energy.step_sizes(raw)
  update_mask = corrupted.region if config.restore.update_region == "corrupted" else None
  energy_params = {"model": params["model"]}
  if train:
    energy_params["dropout"] = dropout_rng
  efn = energy_fn(model, config)
  trajectory, energies = energy.restore(
      efn, energy_params, corrupted.images, alphas, restore_rng,
      update_mask=update_mask, langevin_noise_scale=config.restore.langevin_noise_scale,
      remat=config.restore.remat, second_order=config.restore.second_order,
      unroll=config.restore.unroll_steps, step_normalization=config.restore.step_normalization)
  return corrupted, trajectory, energies, alphas, functools.partial(efn, energy_params)


def pretraining_loss(params, clean, rng, *, model: nn.Module, config):
  """Restoration loss of a batch of normalized clean images, with metrics.

  With `loss.energy_ranking_weight` > 0 it adds the ranking term of
  `energy.energy_ranking_loss`: the clean image must have lower energy than the
  corrupted one and every restored one.
  """
  corrupted, trajectory, energies, alphas, efn = corrupt_and_restore(
      model, config, params, clean, rng, train=True)
  region = corrupted.region if config.loss.region == "corrupted" else jnp.ones_like(
      corrupted.region)
  loss, per_step = energy.restoration_loss(
      trajectory, clean, region, loss_type=config.loss.type, steps=config.loss.steps,
      patch_size=model.patch_size if config.loss.norm_pix else None)
  aux = {"loss_per_step": per_step, "step_size": alphas, "energy_per_step": energies.mean(axis=1)}
  if config.loss.energy_ranking_weight:
    num_tokens = (clean.shape[1] // model.patch_size) * (clean.shape[2] // model.patch_size)
    others = jnp.concatenate([energies, efn(trajectory[-1])[None]])  # x_0 .. x_K.
    ranking = energy.energy_ranking_loss(efn(clean), others, scale=num_tokens)
    loss = loss + config.loss.energy_ranking_weight * ranking
    aux["energy_ranking"] = ranking
  return loss, aux


def train_step(state: dict, batch: dict, *, model: nn.Module, config,
               tx: optax.GradientTransformation, schedule) -> tuple[dict, dict]:
  """One optimizer step on a batch {'image': uint8 [B, H, W, 3]}."""
  step_rng = jax.random.fold_in(state["rng"], state["step"])
  clean = pixels.normalize(batch["image"], config.data.pixel_mean, config.data.pixel_std)
  loss_fn = functools.partial(mae.mae_loss if config.method == "mae" else pretraining_loss,
                              model=model, config=config)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], clean, step_rng)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(params["model"]),
             "learning_rate": schedule(state["step"]), **aux}
  new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
               "rng": state["rng"]}
  return new_state, metrics


def sharded_train_step(model: nn.Module, config, tx: optax.GradientTransformation, schedule,
                       mesh):
  """(init, state shardings, jitted train step) of `config` on `mesh`.

  `init(rng)` builds the state; the state is laid out by `partitioning`'s rules and
  donated, the batch is split over data×fsdp, the metrics are replicated.
  """
  init = functools.partial(init_state, model, tx, config)
  shardings = partitioning.state_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), tx,
                                           mesh)
  step = partitioning.jit(
      functools.partial(train_step, model=model, config=config, tx=tx, schedule=schedule), mesh,
      in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))
  return init, shardings, step


def restoration_diagnostics(params, images, rng, *, model: nn.Module, config,
                            corruption_config=None) -> dict[str, Any]:
  """Corrupts and restores uint8 `images` without drop path, and measures the result.

  Returns normalized `clean`, `corrupted`, `region`, `trajectory` [K, ...] and
  batch means of: energies (`energy_clean`, `energy_corrupted`,
  `energy_restored` [K]); PSNR (dB) and SSIM in [0, 1] pixel space
  (`psnr_corrupted`, `psnr_restored` [K], likewise `ssim_*`); squared error on
  the corrupted region in normalized units (`mse_corrupted`, `mse_restored` [K]).
  For MAE (`config.method='mae'`): its masking only, K = 1, no energies.
  """
  mean, std = jnp.asarray(config.data.pixel_mean), jnp.asarray(config.data.pixel_std)
  clean = pixels.normalize(images, mean, std)
  per_step = lambda f: jax.vmap(f)(trajectory)
  if config.method == "mae":  # One reconstruction, no energy.
    corrupted, region, restored = mae.restored_images(params, clean, rng, model=model,
                                                      config=config)
    trajectory, energy_metrics = restored[None], {}
  else:
    corruption, trajectory, energies, _, e = corrupt_and_restore(
        model, config, params, clean, rng, train=False, corruption_config=corruption_config)
    corrupted, region = corruption.images, corruption.region
    energy_metrics = {"energy_clean": e(clean).mean(), "energy_corrupted": energies[0].mean(),
                      "energy_restored": per_step(lambda x: e(x).mean())}
  to_unit = lambda x: jnp.clip(x * std + mean, 0., 1.)
  region_mse = lambda x: jnp.sum(jnp.square(x - clean) * region) / jnp.maximum(
      region.sum() * clean.shape[-1], 1.)
  metric = lambda fn, x: fn(to_unit(x), to_unit(clean)).mean()
  return {"clean": clean, "corrupted": corrupted, "region": region,
          "trajectory": trajectory, **energy_metrics,
          "psnr_corrupted": metric(image_metrics.psnr, corrupted),
          "psnr_restored": per_step(lambda x: metric(image_metrics.psnr, x)),
          "ssim_corrupted": metric(image_metrics.ssim, corrupted),
          "ssim_restored": per_step(lambda x: metric(image_metrics.ssim, x)),
          "mse_corrupted": region_mse(corrupted),
          "mse_restored": per_step(region_mse)}
