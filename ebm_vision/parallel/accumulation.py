"""Gradient accumulation: one optimizer step on a global batch, computed micro-batch by
micro-batch inside the jitted step (a `lax.scan`), so activations of only one micro-batch
are alive at a time. Micro-batch j holds examples j, j + k, j + 2k, ...: every device keeps
its share of each micro-batch, so all devices work on every micro-batch.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ebm_vision.parallel import partitioning


def micro_batches(tree, num: int):
  """Each [B, ...] leaf of `tree` as [num, B // num, ...], micro-batch j = examples j::num."""
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"batch of {x.shape[0]} does not split into {num} micro-batches")
    x = jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)
    return partitioning.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, tree)


def value_and_grad(loss_fn: Callable, num_micro_batches: int) -> Callable:
  """Like `jax.value_and_grad(loss_fn, has_aux=True)` for loss_fn(params, batch) -> (loss,
  aux), but averaging loss, aux and gradients over `num_micro_batches` micro-batches of
  `batch` (every leaf split along axis 0). With 1 it is plain `jax.value_and_grad`.

  The average equals the whole batch's value when loss_fn is a mean over examples (or,
  for the restoration loss, when every micro-batch has as many corrupted pixels).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_micro_batches == 1:
    return grad_fn

  def accumulated(params, batch):
    chunks = micro_batches(batch, num_micro_batches)
    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], chunks))

    def body(total, micro_batch):
      out = grad_fn(params, micro_batch)
      return jax.tree.map(lambda t, o: t + o / num_micro_batches, total, out), None
    total, _ = jax.lax.scan(
        body, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), chunks)
    return total
  return accumulated
