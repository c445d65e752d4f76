"""Gradient accumulation: k micro-batches of B make the same step as one batch of k·B."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from ebm_vision import models
from ebm_vision.objectives import train_step
from ebm_vision.parallel import accumulation
from ebm_vision.transfer import classification


def test_micro_batches_interleave_the_examples():
  batch = {"x": jnp.arange(8)[:, None] * jnp.ones((8, 3))}
  chunks = accumulation.micro_batches(batch, 4)
  chex.assert_shape(chunks["x"], (4, 2, 3))
  np.testing.assert_array_equal(chunks["x"][:, :, 0], [[0, 4], [1, 5], [2, 6], [3, 7]])
  with pytest.raises(ValueError, match="does not split into 3"):
    accumulation.micro_batches(batch, 3)


# Plain SGD: AdamW divides by √v, which turns the float noise of gradients that are ~0 by
# design (attention key biases, which softmax ignores) into full-size updates.
SGD = optax.sgd(1.0)


def one_step(config, images, accum_steps):
  c = config.copy_and_resolve_references()
  c.grad_accum_steps = accum_steps
  model = models.create_vit(c.model)
  tx, schedule = SGD, lambda step: 1.0
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))
  return step(state, {"image": images})


@pytest.mark.parametrize("method", ["energy", "mae"])
def test_four_micro_batches_equal_one_big_batch(tiny_config, method):
  tiny_config.method = method
  tiny_config.mae.update(decoder_width=32, decoder_depth=1, decoder_num_heads=2)
  images = jax.random.randint(jax.random.PRNGKey(1), (16, 16, 16, 3), 0, 256,
                              jnp.int32).astype(jnp.uint8)
  whole, whole_metrics = one_step(tiny_config, images, 1)
  split, split_metrics = one_step(tiny_config, images, 4)
  np.testing.assert_allclose(split_metrics["loss"], whole_metrics["loss"], rtol=1e-5)
  chex.assert_trees_all_close(split["params"], whole["params"], rtol=1e-4, atol=1e-6)
  assert not np.allclose(whole["params"]["model"]["embedding"]["kernel"],
                         one_step(tiny_config, images[::-1], 1)[0]["params"]["model"]
                         ["embedding"]["kernel"])  # The comparison can tell steps apart.


def test_fine_tuning_accumulates_the_mixed_batch():
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.finetune.drop_path_rate = 0.
  model = models.create_vit(c.model, num_classes=5)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  batch = {"image": jax.random.randint(jax.random.PRNGKey(1), (16, 16, 16, 3), 0, 256,
                                       jnp.int32).astype(jnp.uint8),
           "label": jnp.arange(16) % 5}
  results = []
  for accum in (1, 4):
    c.grad_accum_steps = accum
    tx, schedule = SGD, lambda step: 1.0
    state = classification.init_state(params, tx, jax.random.PRNGKey(2))
    results.append(jax.jit(functools.partial(
        classification.train_step, model=model, config=c, tx=tx, schedule=schedule,
        num_classes=5))(state, batch))
  (whole, whole_metrics), (split, split_metrics) = results
  np.testing.assert_allclose(split_metrics["loss"], whole_metrics["loss"], rtol=1e-5)
  chex.assert_trees_all_close(split["params"], whole["params"], rtol=1e-4, atol=1e-6)
