"""The EMA of the parameters (`ema_decay`): the debiased average of the trained parameters."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ebm_vision import models
from ebm_vision.objectives import train_step
from ebm_vision.run.optimizer import pretraining_optimizer


def test_ema_is_the_decay_weighted_mean_of_the_trained_parameters(tiny_config):
  """After t steps the EMA is Σ_i decay^(t−i) p_i / Σ_i decay^(t−i) over the parameters
  p_1..p_t after each step: no weight on the initialization, step 1 gives p_1."""
  c = tiny_config
  c.ema_decay, c.num_train_steps = 0.6, 10
  model = models.create_vit(c.model)
  tx, schedule = pretraining_optimizer(c)
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  images = jax.random.randint(jax.random.PRNGKey(1), (8, 16, 16, 3), 0, 256).astype(jnp.uint8)
  trained = []
  for t in range(1, 4):
    state, _ = step(state, {"image": images})
    trained.append(state["params"])
    weights = c.ema_decay ** np.arange(t - 1, -1, -1)
    expected = jax.tree.map(lambda *p: sum(w * x for w, x in zip(weights, p)) / weights.sum(),
                            *trained)
    chex.assert_trees_all_close(state["ema_params"], expected, rtol=1e-5, atol=1e-7)
    assert train_step.evaluation_params(state) is state["ema_params"]
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), trained[2], trained[1]))
  assert max(moved) > 1e-3  # The parameters moved, so the weights are really tested.


def test_no_ema_without_a_decay(tiny_config):
  model = models.create_vit(tiny_config.model)
  tx, _ = pretraining_optimizer(tiny_config)
  state = train_step.init_state(model, tx, tiny_config, jax.random.PRNGKey(0))
  assert "ema_params" not in state
  assert train_step.evaluation_params(state) is state["params"]
