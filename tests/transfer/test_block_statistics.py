"""Per-block statistics: effective rank, pairwise cosine, token RMS, change from init."""
import jax
import numpy as np

from ebm_vision.models import vit
from ebm_vision.transfer import block_statistics


def test_effective_rank_counts_equally_strong_directions():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
  codes = np.repeat(np.eye(4) * 3., 50, axis=0)  # 4 orthogonal directions, equal weight.
  features = np.concatenate([codes, -codes]) @ basis[:4]
  np.testing.assert_allclose(block_statistics.effective_rank(features), 4., rtol=1e-3)
  np.testing.assert_allclose(block_statistics.effective_rank(np.outer(rng.normal(size=100),
                                                                      basis[0])), 1., rtol=1e-3)


def test_mean_pairwise_cosine_is_one_for_collapsed_and_near_zero_for_random_features():
  rng = np.random.default_rng(1)
  assert abs(block_statistics.mean_pairwise_cosine(np.tile([[1., 2., 3.]], (10, 1))) - 1.) < 1e-6
  assert abs(block_statistics.mean_pairwise_cosine(rng.normal(size=(200, 256)))) < 0.01


def test_block_statistics_has_one_row_per_block_and_measures_the_tokens():
  model = vit.ViT(width=16, depth=3, mlp_dim=32, num_heads=2, patch_size=4)
  images = np.random.default_rng(2).integers(0, 256, (8, 8, 8, 3), np.uint8)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3)))["params"]
  stats = block_statistics.block_statistics(model, params, images, (0.5,) * 3, (0.25,) * 3)
  assert len(stats) == 3
  tokens = np.asarray(block_statistics.block_tokens_fn(model)(params, images, (0.5,) * 3,
                                                              (0.25,) * 3))
  assert tokens.shape == (3, 8, 4, 16)
  np.testing.assert_allclose(stats[-1]["token_rms"], np.sqrt(np.mean(tokens[-1]**2)), rtol=1e-6)
  scaled = {**params, "embedding": jax.tree.map(lambda p: 3. * p, params["embedding"])}
  louder = block_statistics.block_statistics(model, scaled, images, (0.5,) * 3, (0.25,) * 3)
  assert louder[0]["token_rms"] > 1.5 * stats[0]["token_rms"]


def test_relative_change_measures_each_part_against_its_initial_values():
  model = vit.ViT(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=4, posemb="learn",
                  pool_type="token", num_classes=3)
  initial = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3)))["params"]
  assert set(block_statistics.relative_change(initial, initial).items()) == {
      ("embedding", 0.), ("encoderblock_0", 0.), ("encoderblock_1", 0.), ("encoder_norm", 0.)}
  moved = {**initial, "head": jax.tree.map(lambda p: p + 1., initial["head"]),
           "Transformer": {**initial["Transformer"], "encoderblock_1": jax.tree.map(
               lambda p: 1.5 * p, initial["Transformer"]["encoderblock_1"])}}
  change = block_statistics.relative_change(moved, initial)
  np.testing.assert_allclose(change["encoderblock_1"], 0.5, rtol=1e-6)  # ‖0.5 θ₀‖ / ‖θ₀‖.
  assert change["encoderblock_0"] == change["embedding"] == 0.  # The head is left out.
  stem = {**moved, "pos_embedding": moved["pos_embedding"] + 1.}  # Learned: part of the stem.
  assert block_statistics.relative_change(stem, initial)["embedding"] > 0.
