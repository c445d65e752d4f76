"""Fine-tuning: mixup/cutmix, layer-wise learning-rate decay, and the loop end to end."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from ebm_vision import finetune
from ebm_vision.data import mixup
from ebm_vision.run.optimizer import create_optimizer, layer_decay_scales, trainable_last_blocks


def test_smoothed_targets_sum_to_one():
  t = mixup.smooth_labels(jnp.array([0, 2]), 4, 0.1)
  np.testing.assert_allclose(t.sum(-1), 1., rtol=1e-6)
  np.testing.assert_allclose(t[0], [0.925, 0.025, 0.025, 0.025], rtol=1e-6)


@pytest.mark.parametrize("mixup_alpha,cutmix_alpha", [(0.8, 0.), (0., 1.)])
def test_mixed_targets_weigh_each_source_as_its_pixels_do(mixup_alpha, cutmix_alpha):
  # Image i is the constant i, so pixel values tell which source each pixel came from.
  images = jnp.arange(4.)[:, None, None, None] * jnp.ones((4, 16, 16, 3))
  targets = jax.nn.one_hot(jnp.arange(4), 4)
  for seed in range(5):
    mixed, mixed_targets = mixup.mix_batch(jax.random.PRNGKey(seed), images, targets,
                                           mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    np.testing.assert_allclose(mixed_targets.sum(-1), 1., rtol=1e-6)
    # Image 0 mixes with image 3: its mean pixel is 3 × (weight of class 3).
    np.testing.assert_allclose(mixed[0].mean(), 3 * mixed_targets[0, 3], rtol=1e-5, atol=1e-6)
    if cutmix_alpha:  # CutMix copies pixels: only the two source values occur.
      assert set(np.unique(np.asarray(mixed[0]))) <= {0., 3.}


def test_mixing_disabled_returns_the_batch():
  images, targets = jnp.ones((2, 4, 4, 3)), jnp.eye(2)
  out = mixup.mix_batch(jax.random.PRNGKey(0), images, targets, mixup_alpha=0., cutmix_alpha=0.)
  assert out[0] is images and out[1] is targets


def test_layer_decay_scales_and_their_effect():
  params = {"embedding": {"kernel": jnp.ones((2, 2))},
            "Transformer": {"encoderblock_0": {"w": jnp.ones(2)},
                            "encoderblock_1": {"w": jnp.ones(2)},
                            "encoder_norm": {"scale": jnp.ones(2)}},
            "head": {"kernel": jnp.ones((2, 2))}}
  scales = layer_decay_scales(params, depth=2, decay=0.5)
  assert scales["embedding"]["kernel"] == 0.125
  assert scales["Transformer"]["encoderblock_0"]["w"] == 0.25
  assert scales["Transformer"]["encoderblock_1"]["w"] == 0.5
  assert scales["Transformer"]["encoder_norm"]["scale"] == scales["head"]["kernel"] == 1.
  c = common.get_transfer_config().optimizer
  c.warmup_steps, c.weight_decay = 0, 0.
  tx, _ = create_optimizer(c, 256, 10, lr_scales=scales)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  ratio = jnp.abs(updates["embedding"]["kernel"]).max() / jnp.abs(updates["head"]["kernel"]).max()
  np.testing.assert_allclose(ratio, 0.125, rtol=1e-5)


def test_frozen_parameters_get_no_update_and_no_moments():
  params = {"embedding": {"kernel": jnp.ones((2, 2))},
            "Transformer": {"encoderblock_0": {"w": jnp.ones((2, 2))},
                            "encoderblock_1": {"w": jnp.ones((2, 2))},
                            "encoder_norm": {"scale": jnp.ones(2)}},
            "head": {"kernel": jnp.ones((2, 3))}}
  trainable = trainable_last_blocks(params, depth=2, num_blocks=1)
  assert not trainable["embedding"]["kernel"]
  assert not trainable["Transformer"]["encoderblock_0"]["w"]
  assert trainable["Transformer"]["encoderblock_1"]["w"]
  assert trainable["Transformer"]["encoder_norm"]["scale"] and trainable["head"]["kernel"]
  assert all(jax.tree.leaves(trainable_last_blocks(params, depth=2, num_blocks=0)))
  c = common.get_transfer_config().optimizer
  c.warmup_steps = 0
  tx, _ = create_optimizer(c, 256, 10, lr_scales=layer_decay_scales(params, 2, 0.5),
                           trainable=trainable)
  opt_state = tx.init(params)
  # AdamW's moments cover the 3 trainable arrays only (14 numbers, not 18).
  moments = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim > 0)
  assert moments == 2 * (4 + 2 + 6)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  assert not jnp.any(updates["embedding"]["kernel"])
  assert not jnp.any(updates["Transformer"]["encoderblock_0"]["w"])
  assert jnp.all(updates["Transformer"]["encoderblock_1"]["w"] < 0)
  assert jnp.all(updates["head"]["kernel"] < 0)


def test_delayed_parameters_hold_still_then_ramp_up_over_the_warm_up():
  params = {"Transformer": {"w": jnp.ones(2)}, "head": {"kernel": jnp.ones((2, 2))}}
  delayed = {"Transformer": {"w": True}, "head": {"kernel": False}}
  c = common.get_transfer_config().optimizer
  c.warmup_steps, c.weight_decay = 2, 0.
  tx, _ = create_optimizer(c, 256, 100, delayed=delayed, delay_steps=3)
  opt_state, backbone, head = tx.init(params), [], []
  for _ in range(7):
    updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    backbone.append(float(jnp.abs(updates["Transformer"]["w"]).max()))
    head.append(float(jnp.abs(updates["head"]["kernel"]).max()))
  assert backbone[:4] == [0.] * 4  # Steps 0-3: the head alone (step 0: warm-up's zero rate).
  assert all(h > 0 for h in head[1:])
  # Step 4 is half-way up the ramp, step 5 at its top: the same rate as the head.
  np.testing.assert_allclose(backbone[4], 0.5 * head[4], rtol=1e-5)
  np.testing.assert_allclose(backbone[5:], head[5:], rtol=1e-5)
  tx, _ = create_optimizer(c, 256, 100, delayed=delayed, delay_steps=0)
  assert len(jax.tree.leaves(tx.init(params))) == len(jax.tree.leaves(
      create_optimizer(c, 256, 100)[0].init(params)))  # Off: the state of no delay.


@pytest.mark.slow
def test_finetuning_runs_evaluates_and_keeps_the_best(tfds_dir, tmp_path, pretrained_workdir,
                                                      caplog):
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.mode, c.pretrained = "finetune", pretrained_workdir
  c.data.builder_dir, c.batch_size = tfds_dir, 8
  c.num_train_steps, c.finetune.eval_every_steps = 4, 2
  c.checkpoint_every_steps = 2
  scalars = finetune.train_and_evaluate(c, str(tmp_path))
  assert 0 <= scalars["eval/top1"] <= scalars["eval/top5"] <= 1
  assert np.isfinite(scalars["train/loss"])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert len([d for d in os.listdir(tmp_path / "best") if d.isdigit()]) == 1
  c.num_train_steps = 6  # Resumes from step 4.
  scalars = finetune.train_and_evaluate(c, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "6"
  # The fine-tuned backbone loads for transfer from the run, a step, or the best evaluation.
  for path, found in ((tmp_path, "the fine-tuning checkpoint of step 6"),
                      (tmp_path / "checkpoints" / "4", "the fine-tuning checkpoint of step 4"),
                      (tmp_path / "best", "the best fine-tuning checkpoint of step")):
    with caplog.at_level("INFO"):
      model, params = finetune.pretrained.load_pretrained(str(path), num_classes=3)
    assert found in caplog.text, path
    assert np.abs(params["head"]["kernel"]).max() == 0  # A fresh head.
  assert model.width == 64 and model.depth == 2


def finetuned_params(tfds_dir, tmp_path, pretrained_workdir, num_train_steps, **finetune_fields):
  """Fine-tunes the tiny pretrained backbone with `finetune_fields` set, checkpointing every
  2 steps; returns (params at a step, as a function of the step) and the loaded backbone."""
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.mode, c.pretrained = "finetune", pretrained_workdir
  c.finetune.update(finetune_fields)
  c.data.builder_dir, c.batch_size, c.num_train_steps = tfds_dir, 8, num_train_steps
  c.finetune.eval_every_steps = c.checkpoint_every_steps = 2
  finetune.train_and_evaluate(c, str(tmp_path))
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  def params_at(step):
    return ocp.StandardCheckpointer().restore(
        str(tmp_path / "checkpoints" / str(step) / "state"))["params"]
  return params_at, finetune.pretrained.load_pretrained(pretrained_workdir, num_classes=3)[1]


@pytest.mark.slow
def test_finetuning_the_last_block_leaves_the_others(tfds_dir, tmp_path, pretrained_workdir):
  params_at, loaded = finetuned_params(tfds_dir, tmp_path, pretrained_workdir, 2,
                                       train_last_blocks=1)
  params = params_at(2)
  blocks, loaded_blocks = params["Transformer"], loaded["Transformer"]
  for a, b in zip(jax.tree.leaves(blocks["encoderblock_0"]),
                  jax.tree.leaves(loaded_blocks["encoderblock_0"])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(params["embedding"]["kernel"], loaded["embedding"]["kernel"])
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(blocks["encoderblock_1"]), jax.tree.leaves(loaded_blocks["encoderblock_1"])))


@pytest.mark.slow
def test_head_only_steps_leave_the_backbone_as_pretrained(tfds_dir, tmp_path, pretrained_workdir):
  # 4 steps, half of them head-only: steps 0 and 1 leave the backbone as it was.
  params_at, loaded = finetuned_params(tfds_dir, tmp_path, pretrained_workdir, 4,
                                       head_only_fraction=0.5)
  at_2, at_4 = params_at(2), params_at(4)
  for a, b in zip(jax.tree.leaves(at_2["Transformer"]), jax.tree.leaves(loaded["Transformer"])):
    np.testing.assert_array_equal(a, b)
  assert np.abs(at_2["head"]["kernel"]).max() > 0
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(at_4["Transformer"]), jax.tree.leaves(loaded["Transformer"])))


def test_folded_standardization_gives_the_probe_logits():
  rng = np.random.default_rng(0)
  feats = rng.normal(3., 2., (10, 4)).astype(np.float32)
  stats = {"mean": feats.mean(0), "var": feats.var(0)}
  params = {"head": {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                     "bias": rng.normal(size=3).astype(np.float32)}}
  folded = finetune.classification.fold_standardization(params, stats)
  expected = (feats - stats["mean"]) / np.sqrt(stats["var"] + 1e-6) @ params["head"]["kernel"] \
      + params["head"]["bias"]
  np.testing.assert_allclose(feats @ folded["head"]["kernel"] + folded["head"]["bias"], expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_trained_linear_probe_changes_only_the_head(tfds_dir, tmp_path, pretrained_workdir):
  c = common.get_transfer_config()
  common.tiny_model(c)
  c.mode, c.frozen.fast, c.pretrained = "linear_probe", False, pretrained_workdir
  c.data.builder_dir, c.batch_size = tfds_dir, 8
  c.num_train_steps, c.finetune.eval_every_steps, c.checkpoint_every_steps = 3, 3, 3
  scalars = finetune.train_and_evaluate(c, str(tmp_path))
  assert 0 <= scalars["eval/top1"] <= 1
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = ocp.StandardCheckpointer().restore(str(tmp_path / "checkpoints" / "3" / "state"))
  _, loaded = finetune.pretrained.load_pretrained(pretrained_workdir, num_classes=3)
  for name in ("embedding", "pos_embedding", "Transformer"):
    for a, b in zip(jax.tree.leaves(state["params"][name]), jax.tree.leaves(loaded[name])):
      np.testing.assert_array_equal(a, b)
  assert np.abs(state["params"]["head"]["kernel"]).max() > 0
  assert not np.allclose(state["probe_stats"]["var"], 1.)


def test_adamw_first_moment_in_bfloat16():
  params = {"w": jnp.ones((4, 4))}
  c = common.get_transfer_config().optimizer
  c.warmup_steps, c.warmup_epochs = 0, None
  for dtype, expected in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    c.mu_dtype = dtype
    state = create_optimizer(c, 256, 10)[0].init(params)
    mus = [s.mu["w"] for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu"))
           if hasattr(s, "mu")]
    assert mus and all(m.dtype == expected for m in mus)
