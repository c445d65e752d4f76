"""Per-block statistics of a backbone: where features live and whether they collapse.

For each transformer block's output tokens h [B, N, D] (before any norm): the token RMS
(activation scale), and of the token-mean features: the mean pairwise cosine between
images (→ 1 when every image maps to the same direction) and the effective rank
(Roy & Vetterli 2007: exp of the entropy of the normalized singular values of the centred
features; D at most). Of the parameters: how far each part moved from its initial values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ebm_vision.data import pixels


def block_tokens_fn(model):
  """jitted (params, uint8 images, pixel_mean, pixel_std) -> [depth, B, N, D] float32 tokens."""
  @jax.jit
  def tokens(params, images, pixel_mean, pixel_std):
    x = pixels.normalize(images, pixel_mean, pixel_std)
    return model.apply({"params": params}, x)["block_tokens"].astype(jnp.float32)
  return tokens


def mean_pairwise_cosine(features: np.ndarray) -> float:
  """Mean cosine similarity over all pairs of distinct rows of [B, D]."""
  f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  sims = f @ f.T
  b = len(f)
  return float((sims.sum() - np.trace(sims)) / (b * (b - 1)))


def effective_rank(features: np.ndarray) -> float:
  """exp(entropy of σ / Σσ) of the centred [B, D] features."""
  s = np.linalg.svd(features - features.mean(0), compute_uv=False)
  p = s / max(s.sum(), 1e-12)
  p = p[p > 0]
  return float(np.exp(-(p * np.log(p)).sum()))


def block_statistics(model, params, images: np.ndarray, pixel_mean, pixel_std) -> list[dict]:
  """[{'token_rms', 'mean_cosine', 'effective_rank'} for each block] on uint8 `images`."""
  tokens = np.asarray(block_tokens_fn(model)(params, images, tuple(pixel_mean),
                                             tuple(pixel_std)))
  return [{"token_rms": float(np.sqrt(np.mean(np.square(h)))),
           "mean_cosine": mean_pairwise_cosine(h.mean(axis=1)),
           "effective_rank": effective_rank(h.mean(axis=1))} for h in tokens]


def relative_change(params, initial) -> dict[str, float]:
  """‖θ − θ₀‖ / ‖θ₀‖ of each part of a ViT: 'embedding' (the patch embedding with the
  position embedding and class token, when learned), every 'encoderblock_i' and
  'encoder_norm'; a classification head is left out."""
  def change(new, old):
    diff = sum(np.sum(np.square(np.asarray(a) - np.asarray(b)))
               for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)))
    norm = sum(np.sum(np.square(np.asarray(b))) for b in jax.tree.leaves(old))
    return float(np.sqrt(diff / max(norm, 1e-30)))
  stem = [k for k in params if k not in ("Transformer", "head")]
  parts = {"embedding": ({k: params[k] for k in stem}, {k: initial[k] for k in stem})}
  parts.update({k: (v, initial["Transformer"][k]) for k, v in params["Transformer"].items()})
  return {name: change(*pair) for name, pair in parts.items()}
