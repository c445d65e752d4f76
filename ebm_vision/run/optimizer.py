"""AdamW with linear warm-up and cosine decay, weight decay on weight matrices only."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# optimizer.mu_dtype -> dtype of AdamW's first moment (big_vision, MaxText: bfloat16 halves it).
MU_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# Parameter names that get no weight decay (besides every 1-D parameter).
NO_DECAY_NAMES = ("pos_embedding", "cls", "raw_step_size", "mask_fill")


def weight_decay_mask(params):
  """True for kernels (≥2-D) except position/class embeddings, step sizes, mask fill."""
  def decays(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    return leaf.ndim >= 2 and not any(n in NO_DECAY_NAMES for n in names)
  return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_schedule(opt_config, global_batch_size: int, num_train_steps: int):
  """Warm-up from 0 then cosine decay to 0; peak = learning_rate_per_256 · batch/256."""
  peak = opt_config.learning_rate_per_256 * global_batch_size / 256
  return optax.warmup_cosine_decay_schedule(
      init_value=0., peak_value=peak, warmup_steps=opt_config.warmup_steps,
      decay_steps=max(num_train_steps, opt_config.warmup_steps + 1), end_value=0.)


def layer_index(path_names, depth: int) -> int:
  """Depth of a ViT parameter: 0 for the patch/position embeddings, i+1 for block i,
  depth+1 for the final norm and the head."""
  for name in path_names:
    if name.startswith("encoderblock_"):
      return int(name.split("_")[1]) + 1
  if any(n in ("embedding", "pos_embedding", "cls") for n in path_names):
    return 0
  return depth + 1


def layer_decay_scales(params, depth: int, decay: float):
  """Per-parameter learning-rate factors decay^(depth + 1 − layer) (BEiT / MAE fine-tuning)."""
  def scale(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    return decay**(depth + 1 - layer_index(names, depth))
  return jax.tree_util.tree_map_with_path(scale, params)


def trainable_last_blocks(params, depth: int, num_blocks: int):
  """True for the parameters of the last `num_blocks` blocks, the final norm and the head;
  every parameter for `num_blocks` = 0."""
  def trainable(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    return num_blocks == 0 or layer_index(names, depth) > depth - num_blocks
  return jax.tree_util.tree_map_with_path(trainable, params)


def create_optimizer(opt_config, global_batch_size: int, num_train_steps: int,
                     lr_scales=None, group_lr_multipliers=None, trainable=None,
                     delayed=None, delay_steps: int = 0):
  """Returns (optax transformation, learning-rate schedule).

  `lr_scales`, a tree like the params, multiplies each parameter's update
  (layer-wise learning-rate decay). `group_lr_multipliers` {top-level params key:
  factor} does the same for whole groups (e.g. {'restore': 100.} for the step sizes);
  with all factors 1 the optimizer state is that of no multipliers (old checkpoints resume).
  `trainable`, a tree of bools like the params, freezes the False ones: their updates
  are zero and AdamW keeps no moments for them (`optax.set_to_zero`).
  `delayed`, a tree of bools like the params, holds the True ones still for the first
  `delay_steps` steps, then ramps their updates from 0 to 1 over the warm-up (LP-FT:
  the head learns before the backbone); their AdamW moments accumulate meanwhile.
  """
  schedule = learning_rate_schedule(opt_config, global_batch_size, num_train_steps)
  parts = []
  if opt_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2,
                           weight_decay=opt_config.weight_decay, mask=weight_decay_mask,
                           mu_dtype=MU_DTYPES[opt_config.get("mu_dtype", "float32")]))
  if trainable is not None:
    labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
    parts = [optax.multi_transform({"train": optax.chain(*parts),
                                    "frozen": optax.set_to_zero()}, labels)]
  if delay_steps:
    ramp = max(opt_config.warmup_steps, 1)
    parts.append(optax.masked(optax.scale_by_schedule(
        lambda step: jnp.clip((step - delay_steps) / ramp, 0., 1.)), delayed))
  if lr_scales is not None:
    parts.append(optax.stateless(lambda updates, _: jax.tree.map(
        lambda u, s: u * s, updates, lr_scales)))
  if any(m != 1. for m in (group_lr_multipliers or {}).values()):
    parts.append(optax.stateless(lambda updates, _: jax.tree_util.tree_map_with_path(
        lambda path, u: u * group_lr_multipliers.get(getattr(path[0], "key", None), 1.),
        updates)))
  return optax.chain(*parts), schedule


def pretraining_optimizer(config):
  """`create_optimizer` for a pretraining config (the step sizes' own learning rate)."""
  return create_optimizer(config.optimizer, config.batch_size, config.num_train_steps,
                          group_lr_multipliers={"restore": config.restore.step_size_lr_multiplier})
