"""Pure functions of supervised fine-tuning: init, train step (mixup/cutmix, label smoothing), eval step."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ebm_vision.data import mixup, pixels
from ebm_vision.parallel import accumulation


def init_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> dict:
  """The fine-tuning state at step 0 from (pretrained) `params`."""
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
          "rng": rng}


def train_step(state: dict, batch: dict, *, model: nn.Module, config, tx, schedule,
               num_classes: int) -> tuple[dict, dict]:
  """One step of cross-entropy on mixed, label-smoothed targets; batch {'image', 'label'}.

  The whole batch is mixed first; the gradient is then accumulated over
  `grad_accum_steps` micro-batches of it.
  """
  mix_rng, dropout_rng = jax.random.split(jax.random.fold_in(state["rng"], state["step"]))
  ft = config.finetune
  images = pixels.normalize(batch["image"], config.data.pixel_mean, config.data.pixel_std)
  targets = mixup.smooth_labels(batch["label"], num_classes, ft.label_smoothing)
  images, targets = mixup.mix_batch(mix_rng, images, targets, mixup_alpha=ft.mixup_alpha,
                                    cutmix_alpha=ft.cutmix_alpha,
                                    switch_prob=ft.mix_switch_prob)

  def loss_fn(params, micro_batch):
    logits = model.apply({"params": params}, micro_batch["images"], train=True,
                         rngs={"dropout": dropout_rng})["logits"]
    return optax.softmax_cross_entropy(logits, micro_batch["targets"]).mean(), {}

  (loss, _), grads = accumulation.value_and_grad(loss_fn, config.grad_accum_steps)(
      state["params"], {"images": images, "targets": targets})
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "learning_rate": schedule(state["step"])}
  return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


@functools.partial(jax.jit, static_argnames=("model", "pixel_mean", "pixel_std"))
def eval_step(params, batch: dict, *, model: nn.Module, pixel_mean, pixel_std) -> dict:
  """Counts of top-1 and top-5 hits among the valid examples of a padded batch."""
  logits = model.apply({"params": params},
                       pixels.normalize(batch["image"], pixel_mean, pixel_std))["logits"]
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  hits = top5 == batch["label"][:, None]
  valid = batch["mask"].astype(jnp.float32)
  return {"top1": jnp.sum(hits[:, 0] * valid), "top5": jnp.sum(hits.any(-1) * valid),
          "count": valid.sum()}


def fold_standardization(params, stats: dict, eps: float = 1e-6):
  """Folds (x − mean)/√(var + eps) into the head: a plain ViT giving the probe's logits."""
  inv = 1. / jnp.sqrt(stats["var"] + eps)
  kernel = params["head"]["kernel"] * inv[:, None]
  bias = params["head"]["bias"] - (stats["mean"] * inv) @ params["head"]["kernel"]
  return {**params, "head": {"kernel": kernel, "bias": bias}}


def init_probe_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> dict:
  """Linear-probe state: fine-tuning state plus the running feature statistics."""
  width = params["head"]["kernel"].shape[0]
  return {**init_state(params, tx, rng),
          "probe_stats": {"mean": jnp.zeros((width,)), "var": jnp.ones((width,))}}


def probe_train_step(state: dict, batch: dict, *, model: nn.Module, config, tx, schedule,
                     num_classes: int, momentum: float = 0.9) -> tuple[dict, dict]:
  """Linear probe (MAE): frozen backbone, BatchNorm without affine, linear head.

  Features are standardized with the batch's statistics, whose running
  averages serve at evaluation; only params['head'] changes (`tx` must
  freeze the rest).
  """
  images = pixels.normalize(batch["image"], config.data.pixel_mean, config.data.pixel_std)
  feats = jax.lax.stop_gradient(model.apply({"params": state["params"]}, images)["pre_logits"])
  mean, var = feats.mean(0), feats.var(0)
  x = (feats - mean) / jnp.sqrt(var + 1e-6)

  def loss_fn(head):
    logits = x @ head["kernel"] + head["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  loss, head_grads = jax.value_and_grad(loss_fn)(state["params"]["head"])
  grads = {**jax.tree.map(jnp.zeros_like, state["params"]), "head": head_grads}
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  stats = jax.tree.map(lambda old, new: momentum * old + (1. - momentum) * new,
                       state["probe_stats"], {"mean": mean, "var": var})
  metrics = {"loss": loss, "grad_norm": optax.global_norm(head_grads),
             "learning_rate": schedule(state["step"])}
  return {**state, "step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
          "opt_state": opt_state, "probe_stats": stats}, metrics
