"""The jitted train step on 8 (simulated) devices equals the step on one device."""
import functools

import jax
import numpy as np

from ebm_vision import mesh as mesh_lib
from ebm_vision import models, pretraining
from ebm_vision.optimizer import create_optimizer


def run_steps(config, devices, batches):
  mesh = mesh_lib.create_mesh(config.mesh, devices=devices)
  replicated = mesh_lib.replicated(mesh)
  model = models.create_vit(config.model)
  tx, schedule = create_optimizer(config.optimizer, config.batch_size, config.num_train_steps)
  init = functools.partial(pretraining.init_state, model, tx, config)
  shardings = jax.tree.map(lambda _: replicated, jax.eval_shape(init, jax.random.PRNGKey(0)))
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(pretraining.train_step, model=model, config=config, tx=tx,
                                   schedule=schedule),
                 in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(shardings, replicated), donate_argnums=(0,))
  losses = []
  for batch in batches:
    batch = mesh_lib.global_batch(batch, mesh)
    assert len(batch["image"].sharding.device_set) == len(devices)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return jax.device_get(state["params"]), losses


def test_eight_device_step_equals_one_device_step(tiny_config):
  assert jax.device_count() == 8, "conftest.py should simulate 8 CPU devices"
  rng = np.random.default_rng(0)
  batches = [{"image": rng.integers(0, 256, (8, 16, 16, 3), np.uint8)} for _ in range(3)]
  params_8, losses_8 = run_steps(tiny_config, jax.devices(), batches)
  params_1, losses_1 = run_steps(tiny_config, jax.devices()[:1], batches)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  compared = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params_8),
                          jax.tree.leaves(params_1)):
    # Attention key biases have an exactly zero gradient (softmax ignores a shift
    # shared by all keys), so Adam turns reduction-order rounding into full-size,
    # harmless updates there: they are the one place the two runs may differ.
    if "['key']['bias']" in jax.tree_util.keystr(path):
      continue
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    compared += 1
  assert compared == len(jax.tree.leaves(params_1)) - tiny_config.model.depth
