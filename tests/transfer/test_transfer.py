"""Transfer: loading checkpoints in Flax, kNN, the linear probe and frozen evaluation."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common
from ebm_vision import frozen_eval, train
from ebm_vision.data import input_pipeline
from ebm_vision.run import run_config
from ebm_vision.run.errors import CheckpointError
from ebm_vision.transfer import features, pretrained

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.mark.slow
def test_load_at_another_resolution_keeps_the_backbone_and_adds_a_head(pretrained_workdir):
  model, params = pretrained.load_pretrained(pretrained_workdir, image_size=32, num_classes=7)
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(pretrained_workdir, "checkpoints", "2", "state"))["params"]
  assert "restore" in saved and set(params) == set(saved["model"]) | {"head"}
  chex.assert_shape(params["pos_embedding"], (1, 64, 64))  # 4×4 grid -> 8×8 grid.
  for name in ("embedding", "Transformer"):
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(saved["model"][name])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(params["head"]["kernel"], 0.)
  out = model.apply({"params": params}, np.zeros((2, 32, 32, 3), np.float32))
  chex.assert_shape(out["logits"], (2, 7))
  assert pretrained.checkpoint_step(pretrained_workdir) == 2


@pytest.mark.slow
def test_a_checkpoint_written_on_8_devices_loads_in_a_1_device_process(pretrained_workdir,
                                                                       tmp_path):
  """Pretrained on a pod, transferred on a workstation: the saved shardings name devices
  that process does not have."""
  _, params = pretrained.load_pretrained(pretrained_workdir)
  script = ("import sys, jax, numpy as np, ebm_vision\n"
            "assert jax.device_count() == 1\n"
            "_, params = ebm_vision.load_pretrained(sys.argv[1])\n"
            "np.savez(sys.argv[2], *jax.tree.leaves(params))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  result = subprocess.run([sys.executable, "-c", script, pretrained_workdir,
                           str(tmp_path / "params.npz")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(tmp_path / "params.npz") as loaded:
    for i, leaf in enumerate(jax.tree.leaves(params)):
      np.testing.assert_array_equal(loaded[f"arr_{i}"], leaf)


@pytest.mark.slow
def test_class_token_features_from_a_global_pool_checkpoint(pretrained_workdir):
  model, params = pretrained.load_pretrained(pretrained_workdir, pool_type="token")
  np.testing.assert_array_equal(params["cls"], 0.)
  out = model.apply({"params": params}, np.zeros((2, 16, 16, 3), np.float32))
  chex.assert_shape(out["tokens"], (2, 17, 64))  # The class token comes first.
  np.testing.assert_allclose(out["pre_logits"], out["encoded"][:, 0])


@pytest.mark.slow
def test_loading_into_another_architecture_names_the_mismatched_shapes(pretrained_workdir):
  model_config = run_config.load(pretrained_workdir).model
  model_config.width, model_config.mlp_dim = 32, 64
  with pytest.raises(CheckpointError, match=r"embedding/kernel: checkpoint \(4, 4, 3, 64\) vs "
                                       r"model \(4, 4, 3, 32\)"):
    pretrained.load_pretrained(pretrained_workdir, model_config=model_config, image_size=16)


def test_knn_and_linear_probe_on_separable_features():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(5, 16)) * 3
  labels = rng.integers(0, 5, 600)
  feats = centers[labels] + rng.normal(size=(600, 16))
  train_f, train_y, test_f, test_y = feats[:500], labels[:500], feats[500:], labels[500:]
  assert features.knn_accuracy(train_f, train_y, test_f, test_y, 5, k=10) > 0.95
  shuffled = features.knn_accuracy(train_f, rng.permutation(train_y), test_f, test_y, 5, k=10)
  assert shuffled < 0.45  # Chance is 0.2: the labels, not the features, carry the answer.
  probe = features.fit_linear_probe(train_f, train_y, 5, epochs=30, batch_size=100,
                                    learning_rate=1e-2)
  acc = features.linear_probe_accuracy(probe, test_f, test_y)
  assert acc["top1"] > 0.95 and acc["top5"] == 1.0


def test_labeled_batches_pad_the_last_batch(tfds_dir):
  c = common.get_transfer_config().data
  c.builder_dir, c.image_size = tfds_dir, 16
  batches = list(input_pipeline.labeled_batches(c, "validation", 3))
  assert [b["image"].shape for b in batches] == [(3, 16, 16, 3)] * 3
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]),
                                [1] * 8 + [0])
  assert input_pipeline.num_classes(c) == 3


@pytest.mark.slow
@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_frozen_evaluation_writes_knn_and_probe_results(tfds_dir, tmp_path, pretrained_workdir,
                                                         use_checkpoint):
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.model.posemb = "learn"
  c.pretrained = pretrained_workdir if use_checkpoint else None
  c.data.builder_dir, c.batch_size = tfds_dir, 8
  c.frozen.probe_epochs = 2
  results = frozen_eval.evaluate(c, str(tmp_path))
  for key in ("knn/top1", "linear_probe/top1", "linear_probe/top5"):
    assert 0 <= results[key] <= 1
  assert results["linear_probe/top5"] == 1.0  # 3 classes.
  with open(tmp_path / "frozen_eval.json") as f:
    saved = json.load(f)
  assert (saved["num_train"], saved["num_eval"]) == (24, 8)
  assert saved["checkpoint_step"] == (2 if use_checkpoint else 0)


@pytest.mark.slow
def test_knn_per_block(tfds_dir, tmp_path):
  """Block features: one pooled row per block, the last one the global-pool feature of a
  random init (its final norm is the identity); frozen eval reports kNN for each block."""
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.data.builder_dir, c.batch_size, c.mode = tfds_dir, 8, "knn"
  c.frozen.knn_per_block = True
  model, params, _ = pretrained.backbone(c)
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), np.uint8)
  _, blocks = features.make_feature_fn(model, c.data.pixel_mean, c.data.pixel_std,
                                       per_block=True)(params, images)
  chex.assert_shape(blocks, (4, c.model.depth, c.model.width))
  pooled = features.make_feature_fn(model, c.data.pixel_mean, c.data.pixel_std)(params, images)
  np.testing.assert_allclose(blocks[:, -1], pooled, atol=1e-5)
  assert not np.allclose(blocks[:, 0], blocks[:, -1], atol=1e-2)
  results = frozen_eval.evaluate(c, str(tmp_path))
  keys = {f"knn/top1_block{i}" for i in range(1, c.model.depth + 1)}
  assert keys <= set(results) and all(0 <= results[k] <= 1 for k in keys)
  assert "linear_probe/top1" not in results


@pytest.mark.slow
def test_knn_monitor_during_pretraining(tiny_config, tfds_dir, tmp_path):
  c = tiny_config
  c.data.source, c.data.builder_dir = "tfds", tfds_dir
  c.knn_monitor.every_steps, c.knn_monitor.num_train_examples = 2, 16
  scalars = train.train_and_evaluate(c, str(tmp_path))
  assert 0 <= scalars["knn/top1"] <= 1


def test_loading_says_what_it_found_and_warns_of_nothing(pretrained_workdir, caplog):
  with caplog.at_level("INFO"):
    pretrained.load_pretrained(pretrained_workdir)
  assert f"the pretraining checkpoint of step 2 in {pretrained_workdir}" in caplog.text
  assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


@pytest.mark.slow
def test_a_run_with_an_ema_transfers_its_ema(tiny_config, tmp_path, caplog):
  tiny_config.ema_decay, tiny_config.num_train_steps = 0.5, 2
  train.train_and_evaluate(tiny_config, str(tmp_path))
  saved = ocp.StandardCheckpointer().restore(str(tmp_path / "checkpoints" / "2" / "state"))
  with caplog.at_level("INFO"):
    _, params = pretrained.load_pretrained(str(tmp_path))
  assert "(its EMA parameters)" in caplog.text
  chex.assert_trees_all_equal(params, saved["ema_params"]["model"])
  assert not np.array_equal(params["embedding"]["kernel"],
                            saved["params"]["model"]["embedding"]["kernel"])
