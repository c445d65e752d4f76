"""Frozen-feature evaluation: feature extraction, weighted kNN, and a linear probe fitted on features."""
from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ebm_vision.data import pixels
from ebm_vision.models import vit


def make_feature_fn(model, pixel_mean, pixel_std, feature: str = "pre_logits",
                    per_block: bool = False):
  """jitted (params, uint8 images) -> the ViT output `feature` (default: pooled, [B, D]).

  With `per_block`, returns (feature, blocks [B, depth, D]) from the same forward pass:
  every block's output tokens standardized over channels (LayerNorm without affine) and
  averaged over tokens. The last block's row is `pre_logits` of a global-pool ViT whose
  final norm is the identity.
  """
  def is_block_call(module, method_name):
    return isinstance(module, vit.Encoder1DBlock) and method_name == "__call__"

  def forward(params, images):
    images = pixels.normalize(images, pixel_mean, pixel_std)
    if not per_block:
      return model.apply({"params": params}, images)[feature]
    out, state = model.apply({"params": params}, images,
                             capture_intermediates=is_block_call, mutable=["intermediates"])
    blocks = state["intermediates"]["Transformer"]
    pooled = [jax.nn.standardize(blocks[f"encoderblock_{i}"]["__call__"][0].astype(jnp.float32),
                                 epsilon=1e-6).mean(axis=1) for i in range(len(blocks))]
    return out[feature], jnp.stack(pooled, axis=1)
  return jax.jit(forward)


def extract_features(feature_fn, params, batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Features of every valid example in `batches`.

  Args:
    feature_fn: from `make_feature_fn`.
    batches: dicts of numpy 'image' (uint8), 'label' and 'mask' (1 = real example,
      0 = padding of the last batch).

  Returns:
    (features [N, D] float32 (a tuple of arrays for a `per_block` feature_fn), labels [N]).
  """
  features, labels = [], []
  for batch in batches:
    keep = batch["mask"].astype(bool)
    features.append(jax.tree.map(lambda f: np.asarray(f)[keep],  # pylint: disable=cell-var-from-loop
                                 feature_fn(params, batch["image"])))
    labels.append(batch["label"][keep])
  return jax.tree.map(lambda *f: np.concatenate(f), *features), np.concatenate(labels)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
  """Top-1 of a k-nearest-neighbour classifier on cosine similarity.

  Neighbours vote with weight exp(similarity / temperature) (Wu et al. 2018, DINO).
  """
  normalize = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  bank = jnp.asarray(normalize(train_features))
  bank_labels = jnp.asarray(train_labels)
  k = min(k, bank.shape[0])

  @jax.jit
  def predict(queries):
    sims, idx = jax.lax.top_k(queries @ bank.T, k)
    votes = jax.nn.one_hot(bank_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
    return votes.sum(axis=1).argmax(-1)

  test_features = normalize(test_features)
  correct = 0
  for start in range(0, len(test_features), chunk):
    queries = test_features[start:start + chunk]
    padded = np.zeros((chunk, queries.shape[1]), np.float32)
    padded[:len(queries)] = queries  # One shape, one compilation.
    pred = np.asarray(predict(jnp.asarray(padded)))[:len(queries)]
    correct += int((pred == test_labels[start:start + chunk]).sum())
  return correct / len(test_features)


def fit_linear_probe(train_features, train_labels, num_classes: int, *, epochs: int = 90,
                     batch_size: int = 1024, learning_rate: float = 1e-3,
                     weight_decay: float = 0.0, seed: int = 0) -> dict:
  """Fits a linear classifier on standardized frozen features (AdamW, cross-entropy).

  Standardizing with the training set's statistics is MAE's BatchNorm without
  affine parameters in front of the linear head, as it acts at evaluation.
  Returns {'mean', 'std', 'kernel', 'bias'}.
  """
  mean = train_features.mean(0)
  std = train_features.std(0) + 1e-6
  x = jnp.asarray((train_features - mean) / std)
  y = jnp.asarray(train_labels)
  n, d = x.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  head = {"kernel": jnp.zeros((d, num_classes)), "bias": jnp.zeros((num_classes,))}
  opt_state = tx.init(head)

  def loss_fn(head, xb, yb):
    logits = xb @ head["kernel"] + head["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def epoch(head, opt_state, key):
    perm = jax.random.permutation(key, n)[:steps_per_epoch * batch_size]

    def step(carry, idx):
      head, opt_state = carry
      grads = jax.grad(loss_fn)(head, x[idx], y[idx])
      updates, opt_state = tx.update(grads, opt_state, head)
      return (optax.apply_updates(head, updates), opt_state), None

    (head, opt_state), _ = jax.lax.scan(step, (head, opt_state),
                                        perm.reshape(steps_per_epoch, batch_size))
    return head, opt_state

  key = jax.random.PRNGKey(seed)
  for _ in range(epochs):
    key, sub = jax.random.split(key)
    head, opt_state = epoch(head, opt_state, sub)
  return {"mean": mean, "std": std, **jax.device_get(head)}


def linear_probe_accuracy(probe: dict, features, labels) -> dict[str, float]:
  """Top-1 and top-5 of a fitted probe on (features, labels)."""
  logits = ((features - probe["mean"]) / probe["std"]) @ probe["kernel"] + probe["bias"]
  top5 = np.argsort(-logits, axis=1)[:, :5]
  return {"top1": float((top5[:, 0] == labels).mean()),
          "top5": float((top5 == labels[:, None]).any(axis=1).mean())}
