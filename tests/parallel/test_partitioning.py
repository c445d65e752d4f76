"""Mesh, partition rules, and the sharded train step: every layout computes the same step."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ebm_vision import models
from ebm_vision.objectives import train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run import checkpointing
from ebm_vision.run.optimizer import pretraining_optimizer
from tiny_config import get_config as make_tiny_config


def mesh_config(data=-1, fsdp=1, tensor=1):
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def test_mesh_shape_fills_in_the_rest_and_names_bad_fields():
  assert mesh_lib.mesh_shape(mesh_config(), 8) == (8, 1, 1)
  assert mesh_lib.mesh_shape(mesh_config(2, -1), 8) == (2, 4, 1)
  assert mesh_lib.mesh_shape(mesh_config(1, 4, -1), 8) == (1, 4, 2)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    mesh_lib.mesh_shape(mesh_config(-1, -1), 8)
  with pytest.raises(ValueError, match="config.mesh.fsdp=3.*does not divide the 8 devices"):
    mesh_lib.mesh_shape(mesh_config(-1, 3), 8)
  with pytest.raises(ValueError, match="product must equal the 8 devices"):
    mesh_lib.mesh_shape(mesh_config(2, 2, 1), 8)


def setup(config, mesh):
  model = models.create_vit(config.model)
  tx, schedule = pretraining_optimizer(config)
  return train_step.sharded_train_step(model, config, tx, schedule, mesh)


def test_partition_rules_shard_weights_and_their_adam_moments(tiny_config):
  tiny_config.mesh.update(data=2, fsdp=2, tensor=2)
  mesh = mesh_lib.create_mesh(tiny_config.mesh)
  init, shardings, _ = setup(tiny_config, mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  block = state["params"]["model"]["Transformer"]["encoderblock_0"]
  spec = lambda x: x.sharding.spec
  assert spec(block["MlpBlock_0"]["Dense_0"]["kernel"]) == P("fsdp", "tensor")
  assert spec(block["MlpBlock_0"]["Dense_1"]["kernel"]) == P("tensor", "fsdp")
  assert spec(block["MultiHeadDotProductAttention_0"]["query"]["kernel"]) == P(
      "fsdp", "tensor", None)
  assert spec(block["MultiHeadDotProductAttention_0"]["out"]["kernel"]) == P("tensor", None, "fsdp")
  assert spec(block["LayerNorm_0"]["scale"]) == P(None)  # Small vectors stay whole.
  # The embedding's 3 input channels are not divisible by anything: only its width is split.
  assert spec(state["params"]["model"]["embedding"]["kernel"]) == P(None, None, None, "fsdp")
  adam = state["opt_state"][1][0]  # chain(clip, adamw): adamw's ScaleByAdamState.
  mu = adam.mu["model"]["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert spec(mu) == P("fsdp", "tensor")
  assert spec(adam.count) == P()
  # A [64, 128] kernel split 2 × 2 ways holds a quarter of it on each device.
  kernel = block["MlpBlock_0"]["Dense_0"]["kernel"]
  assert kernel.addressable_shards[0].data.shape == (32, 64)


def run_steps(devices, layout):
  """Params and losses after 3 steps on `devices` laid out as (data, fsdp, tensor)."""
  config = make_tiny_config()
  config.mesh.update(data=layout[0], fsdp=layout[1], tensor=layout[2])
  mesh = mesh_lib.create_mesh(config.mesh, devices=devices)
  init, shardings, step = setup(config, mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(3):
    batch = mesh_lib.global_batch({"image": rng.integers(0, 256, (8, 16, 16, 3), np.uint8)}, mesh)
    assert len(batch["image"].sharding.device_set) == len(devices)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return jax.device_get(state["params"]), losses


@pytest.fixture(scope="module")
def one_device_run():
  return run_steps(jax.devices()[:1], (1, 1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("layout", [(8, 1, 1), (2, 4, 1), (1, 4, 2)])
def test_sharded_step_equals_one_device_step(one_device_run, layout):
  """Data parallelism, FSDP and tensor parallelism compute the step of a single device."""
  assert jax.device_count() == 8, "conftest.py should simulate 8 CPU devices"
  params_n, losses_n = run_steps(jax.devices(), layout)
  params_1, losses_1 = one_device_run
  np.testing.assert_allclose(losses_n, losses_1, rtol=1e-5)
  compared = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params_n),
                          jax.tree.leaves(params_1)):
    # Attention key biases have an exactly zero gradient (softmax ignores a shift
    # shared by all keys), so Adam turns reduction-order rounding into full-size,
    # harmless updates there: they are the one place the two runs may differ.
    if "['key']['bias']" in jax.tree_util.keystr(path):
      continue
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    compared += 1
  assert compared == len(jax.tree.leaves(params_1)) - make_tiny_config().model.depth


@pytest.mark.slow
def test_checkpoint_restores_onto_another_mesh(tiny_config, tmp_path):
  """Saved with data=8, restored with data=2 × fsdp=4: same values, the new layout, and
  the next step equals the step taken on the original layout."""
  rng = np.random.default_rng(1)
  batches = [{"image": rng.integers(0, 256, (8, 16, 16, 3), np.uint8)} for _ in range(2)]
  tiny_config.mesh.update(data=8, fsdp=1, tensor=1)
  mesh_a = mesh_lib.create_mesh(tiny_config.mesh)
  init, shardings_a, step_a = setup(tiny_config, mesh_a)
  state, _ = step_a(jax.jit(init, out_shardings=shardings_a)(jax.random.PRNGKey(0)),
                    mesh_lib.global_batch(batches[0], mesh_a))
  manager = checkpointing.create_manager(str(tmp_path), tiny_config)
  checkpointing.save(manager, 1, state, force=True)
  manager.wait_until_finished()
  saved = jax.device_get(state)

  tiny_config.mesh.update(data=2, fsdp=4)
  mesh_b = mesh_lib.create_mesh(tiny_config.mesh)
  _, shardings_b, step_b = setup(tiny_config, mesh_b)
  restored = checkpointing.restore_latest(
      checkpointing.create_manager(str(tmp_path), tiny_config),
      checkpointing.abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), shardings_b))
  for a, b, s in zip(jax.tree.leaves(saved), jax.tree.leaves(restored),
                     jax.tree.leaves(shardings_b)):
    np.testing.assert_array_equal(a, np.asarray(b))
    assert b.sharding == s
  kernel = restored["params"]["model"]["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
  assert kernel["kernel"].sharding.spec == P("fsdp", None)

  _, metrics_a = step_a(state, mesh_lib.global_batch(batches[1], mesh_a))
  _, metrics_b = step_b(restored, mesh_lib.global_batch(batches[1], mesh_b))
  np.testing.assert_allclose(float(metrics_b["loss"]), float(metrics_a["loss"]), rtol=1e-5)
