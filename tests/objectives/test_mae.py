"""The MAE baseline: masking, shapes, a loss that training lowers, and the shared paths."""
import functools

import chex
import jax
import pytest
import jax.numpy as jnp
import numpy as np

from ebm_vision import models, train, viewer
from ebm_vision.data import input_pipeline, pixels
from ebm_vision.objectives import mae, train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning
from ebm_vision.run import checkpointing
from ebm_vision.run.optimizer import pretraining_optimizer
from ebm_vision.transfer import pretrained


def mae_config(config):
  config.method = "mae"
  config.mae.update(decoder_width=32, decoder_depth=1, decoder_num_heads=2)
  config.viewer.tasks = ("mask",)
  return config


def test_random_masking_hides_the_ratio_and_restores_the_order():
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  ids_keep, mask, ids_restore = mae.random_masking(keys, 16, 0.75)
  chex.assert_shape(ids_keep, (3, 4))
  np.testing.assert_array_equal(mask.sum(axis=1), [12, 12, 12])
  for b in range(3):  # Kept patches are the unmasked ones; ids_restore inverts the shuffle.
    assert set(np.asarray(ids_keep[b])) == set(np.flatnonzero(np.asarray(mask[b]) == 0))
  shuffled = jnp.take_along_axis(jnp.argsort(ids_restore, axis=1), ids_restore, axis=1)
  np.testing.assert_array_equal(shuffled, jnp.broadcast_to(jnp.arange(16), (3, 16)))


def test_encoder_sees_only_the_visible_patches(tiny_config):
  config = mae_config(tiny_config)
  model = models.create_vit(config.model)
  params = mae.init_params(model, config, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 2)
  pred, mask, target = mae.reconstruct(params, clean, keys, model=model, config=config,
                                       train=False)
  chex.assert_shape([pred, target], (2, 16, 4 * 4 * 3))
  chex.assert_shape(mask, (2, 16))
  # Changing a masked patch changes no prediction: the encoder never saw it.
  patch = int(np.flatnonzero(np.asarray(mask[0]))[0])
  row, col = divmod(patch, 4)
  edited = clean.at[0, 4 * row:4 * row + 4, 4 * col:4 * col + 4].add(5.)
  pred2, _, _ = mae.reconstruct(params, edited, keys, model=model, config=config, train=False)
  np.testing.assert_allclose(pred2, pred, atol=1e-5)


@pytest.mark.slow
def test_mae_trains_in_the_shared_loop_and_transfers_like_energy_pretraining(tiny_config,
                                                                             tmp_path):
  config = mae_config(tiny_config)
  config.num_train_steps = config.checkpoint_every_steps = 30
  scalars = train.train_and_evaluate(config, str(tmp_path))
  assert "eval/mask/psnr_restored_1" in scalars and "eval/mask/energy_clean" not in scalars

  model = models.create_vit(config.model)
  tx, _ = pretraining_optimizer(config)
  init = functools.partial(train_step.init_state, model, tx, config)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  mesh = mesh_lib.create_mesh(config.mesh)
  trained = checkpointing.restore_latest(
      checkpointing.create_manager(str(tmp_path), config),
      checkpointing.abstract_like(abstract, partitioning.state_shardings(abstract, mesh)))
  assert set(trained["params"]) == {"model", "decoder"}
  images = input_pipeline.eval_images(config.data, 8)
  loss = lambda params: float(mae.loss(
      params, pixels.normalize(images, config.data.pixel_mean, config.data.pixel_std),
      jax.random.split(jax.random.PRNGKey(5), 8), model=model, config=config)[0])
  assert loss(trained["params"]) < 0.9 * loss(init(jax.random.PRNGKey(config.seed))["params"])

  # main.py --mode=restore reports MAE's one reconstruction, without energies.
  config.viewer.source, config.viewer.num_images, config.viewer.num_grid_images = (
      "dead_leaves", 4, 4)
  report = viewer.restore_and_report(config, str(tmp_path))
  assert "psnr_restored_1" in report["mask"] and "energy_clean" not in report["mask"]

  # Transfer loads the ViT alone, exactly as after energy pretraining.
  vit, params = pretrained.load_pretrained(str(tmp_path), num_classes=3)
  chex.assert_trees_all_close(
      {k: v for k, v in params.items() if k != "head"}, trained["params"]["model"])
  assert vit.apply({"params": params}, images / 255.)["logits"].shape == (8, 3)


def test_diagnostics_paste_predictions_into_the_visible_image(tiny_config):
  config = mae_config(tiny_config)
  model = models.create_vit(config.model)
  params = mae.init_params(model, config, jax.random.PRNGKey(0))
  images = jax.random.randint(jax.random.PRNGKey(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  diag = train_step.diagnostics(params, images, jax.random.PRNGKey(2), model=model,
                                             config=config)
  chex.assert_shape(diag["trajectory"], (1, 2, 16, 16, 3))
  visible = np.asarray(diag["region"][..., 0]) == 0
  np.testing.assert_allclose(np.asarray(diag["trajectory"][0])[visible],
                             np.asarray(diag["clean"])[visible], atol=1e-6)
  np.testing.assert_allclose(float(diag["region"].mean()), 0.75)
