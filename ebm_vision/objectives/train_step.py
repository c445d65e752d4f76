"""The pretraining step of any objective, picked by `config.method` from `OBJECTIVES`.

An objective is a module with `init_params(model, config, rng)`, `loss(params, clean, rng,
*, model, config) -> (loss, metrics)` and `diagnostics(params, uint8 images, rng, *, model,
config, corruption_config=None)`. The train state is a plain dict {'step', 'params',
'opt_state', 'rng'}, plus 'ema_params' when `config.ema_decay` > 0; randomness of step t
comes from fold_in(state['rng'], t), so a resumed run draws the same corruptions and noise
as an uninterrupted one.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ebm_vision.data import pixels
from ebm_vision.objectives import energy, energy_pretraining, mae
from ebm_vision.parallel import accumulation
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning

OBJECTIVES = {"energy": energy_pretraining, "mae": mae}
DATA_STEP_SIZE_FOLD = 2**31 - 1  # fold_in data of the data-derived step sizes' corruptions.


def init_state(model: nn.Module, tx: optax.GradientTransformation, config,
               rng: jax.Array) -> dict:
  """The full train state at step 0."""
  params = initial_params(model, config, rng)
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": tx.init(params), "rng": jax.random.split(rng)[1]}
  if config.get("ema_decay", 0.):  # Absent from the records of older runs.
    state["ema_params"] = jax.tree.map(jnp.copy, params)  # Replaced wholly at step 1.
  return state


def evaluation_params(state: dict) -> dict:
  """The parameters evaluations, transfer and export read: the EMA when the run keeps one."""
  return state.get("ema_params", state["params"])


def ema_update(ema: dict, params: dict, step: jax.Array, decay: float) -> dict:
  """The debiased exponential moving average after `step` updates (step ≥ 1): the mean of
  the parameters after updates 1..step weighted decay^(step − i), so step 1 gives `params`
  and no weight stays on the initialization."""
  t = step.astype(jnp.float32)
  log_decay = jnp.log(decay)
  # keep = decay (1 − decay^(t−1)) / (1 − decay^t), with expm1 accurate for decay near 1.
  keep = decay * jnp.expm1((t - 1) * log_decay) / jnp.expm1(t * log_decay)
  return jax.tree.map(lambda e, p: (keep * e + (1 - keep) * p).astype(p.dtype), ema, params)


def initial_params(model: nn.Module, config, rng: jax.Array) -> dict:
  """The parameters `init_state(..., rng)` starts from; a run's are those of
  `jax.random.PRNGKey(config.seed)`."""
  return OBJECTIVES[config.method].init_params(model, config, jax.random.split(rng)[0])


def with_data_step_sizes(state: dict, batch: dict, *, model: nn.Module, config) -> dict:
  """`state` with every restoration step size set to `energy_pretraining.data_step_size`
  of `batch` {'image': uint8} (its corruptions drawn from a key no train step uses)."""
  clean = pixels.normalize(batch["image"], config.data.pixel_mean, config.data.pixel_std)
  keys = jax.random.split(jax.random.fold_in(state["rng"], DATA_STEP_SIZE_FOLD), clean.shape[0])
  alpha = energy_pretraining.data_step_size(state["params"], clean, keys, model=model,
                                            config=config)
  raw = energy.raw_step_size_init(alpha, config.restore.num_steps)
  params = {**state["params"], "restore": {**state["params"]["restore"], "raw_step_size": raw}}
  return {**state, "params": params}


def data_step_sizes_fn(model: nn.Module, config, state_sharding, mesh):
  """`with_data_step_sizes` jitted on `mesh`: (state, global batch) -> state, in place."""
  return partitioning.jit(
      functools.partial(with_data_step_sizes, model=model, config=config), mesh,
      in_shardings=(state_sharding, mesh_lib.batch_sharding(mesh)),
      out_shardings=state_sharding, donate_argnums=(0,))


def train_step(state: dict, batch: dict, *, model: nn.Module, config,
               tx: optax.GradientTransformation, schedule) -> tuple[dict, dict]:
  """One optimizer step on a batch {'image': uint8 [B, H, W, 3]}, accumulated over
  `grad_accum_steps` micro-batches. Example i's randomness comes from its own key, so
  the step is the same however the batch is split."""
  step_rng = jax.random.fold_in(state["rng"], state["step"])
  clean = pixels.normalize(batch["image"], config.data.pixel_mean, config.data.pixel_std)
  objective = functools.partial(OBJECTIVES[config.method].loss, model=model, config=config)
  loss_fn = lambda params, b: objective(params, b["clean"], b["keys"])
  (loss, aux), grads = accumulation.value_and_grad(loss_fn, config.grad_accum_steps)(
      state["params"], {"clean": clean, "keys": jax.random.split(step_rng, clean.shape[0])})
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(params["model"]),
             "learning_rate": schedule(state["step"]), **aux}
  new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
  if "ema_params" in state:
    new_state["ema_params"] = ema_update(state["ema_params"], params, new_state["step"],
                                         config.ema_decay)
  return new_state, metrics


def sharded_train_step(model: nn.Module, config, tx: optax.GradientTransformation, schedule,
                       mesh):
  """(init, state shardings, jitted train step) of `config` on `mesh`.

  `init(rng)` builds the state; the state is laid out by `partitioning`'s rules and
  donated, the batch is split over data×fsdp, the metrics are replicated.
  """
  init = functools.partial(init_state, model, tx, config)
  shardings = partitioning.state_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
  step = partitioning.jit(
      functools.partial(train_step, model=model, config=config, tx=tx, schedule=schedule), mesh,
      in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))
  return init, shardings, step


def diagnostics(params, images, rng, *, model: nn.Module, config, corruption_config=None):
  """The objective's restoration diagnostics of uint8 `images` (see `image_metrics`)."""
  return OBJECTIVES[config.method].diagnostics(params, images, rng, model=model, config=config,
                                               corruption_config=corruption_config)
