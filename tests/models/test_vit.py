"""ViT backbone: shapes, dtypes, parameter names, position embeddings, drop path."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebm_vision import models
from ebm_vision.models import vit


def tiny_vit(**kw):
  defaults = dict(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=4)
  return vit.ViT(**{**defaults, **kw})


@pytest.mark.parametrize("pool_type,num_tokens", [("gap", 16), ("token", 17)])
def test_output_shapes_and_dtypes(pool_type, num_tokens):
  model = tiny_vit(pool_type=pool_type, num_classes=5)
  x = jnp.zeros((3, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  out = model.apply({"params": params}, x)
  chex.assert_shape(out["tokens"], (3, num_tokens, 32))
  chex.assert_shape(out["block_tokens"], (2, 3, num_tokens, 32))
  np.testing.assert_array_equal(out["block_tokens"][-1], out["tokens"])
  assert float(jnp.abs(out["block_tokens"][0] - out["tokens"]).max()) > 0
  chex.assert_shape(out["encoded"], (3, num_tokens, 32))
  chex.assert_shape(out["pre_logits"], (3, 32))
  chex.assert_shape(out["logits"], (3, 5))
  chex.assert_type([out["tokens"], out["logits"]], jnp.float32)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  f32, bf16 = tiny_vit(), tiny_vit(dtype=jnp.bfloat16)
  params = f32.init(jax.random.PRNGKey(0), x)["params"]
  chex.assert_type(jax.tree.leaves(bf16.init(jax.random.PRNGKey(0), x)), jnp.float32)
  a = f32.apply({"params": params}, x)["tokens"]
  b = bf16.apply({"params": params}, x)["tokens"]
  assert b.dtype == jnp.float32
  assert 0 < float(jnp.abs(a - b).max()) < 0.1 * float(jnp.abs(a).max())


def test_parameter_names_match_big_vision():
  model = tiny_vit(posemb="learn", pool_type="token", num_classes=3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert set(params) == {"embedding", "pos_embedding", "cls", "Transformer", "head"}
  block = params["Transformer"]["encoderblock_1"]
  assert set(block) == {"LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1",
                        "MlpBlock_0"}
  assert set(block["MultiHeadDotProductAttention_0"]) == {"query", "key", "value", "out"}
  assert "encoder_norm" in params["Transformer"]


@pytest.mark.parametrize("name,width,depth", [("Ti", 192, 12), ("S", 384, 12),
                                              ("B", 768, 12), ("L", 1024, 24),
                                              ("H", 1280, 32)])
def test_decode_variant(name, width, depth):
  kw = vit.decode_variant(f"{name}/14")
  assert (kw["width"], kw["depth"], kw["patch_size"]) == (width, depth, 14)


@pytest.mark.parametrize("bad", ["B", "X/16", "B/sixteen"])
def test_decode_variant_rejects_bad_names(bad):
  with pytest.raises(ValueError, match="B/16"):
    vit.decode_variant(bad)


def test_resample_posemb_keeps_smooth_fields():
  # A field linear in the grid coordinates stays (nearly) linear after resampling.
  yy, xx = np.mgrid[:4, :4].astype(np.float32)
  field = np.stack([yy, xx], -1).reshape(1, 16, 2)
  out = vit.resample_posemb(jnp.asarray(field), (8, 8))
  chex.assert_shape(out, (1, 64, 2))
  out = np.asarray(out).reshape(8, 8, 2)
  assert np.all(np.diff(out[:, 0, 0]) >= 0) and np.all(np.diff(out[0, :, 1]) >= 0)
  np.testing.assert_allclose(out[..., 0].mean(), field[..., 0].mean(), atol=1e-5)
  same = jnp.asarray(field)
  assert vit.resample_posemb(same, (4, 4)) is same


def test_sincos_posemb_is_distinct_per_position():
  pe = np.asarray(vit.sincos2d_posemb((4, 4), 32))[0]
  chex.assert_shape(pe, (16, 32))
  dists = np.linalg.norm(pe[:, None] - pe[None], axis=-1)
  assert np.all(dists[~np.eye(16, dtype=bool)] > 1e-3)


def test_drop_path_is_stochastic_only_in_training():
  model = tiny_vit(drop_path_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  det1 = model.apply({"params": params}, x)["tokens"]
  det2 = model.apply({"params": params}, x)["tokens"]
  np.testing.assert_array_equal(det1, det2)
  r1 = model.apply({"params": params}, x, train=True,
                   rngs={"dropout": jax.random.PRNGKey(1)})["tokens"]
  r2 = model.apply({"params": params}, x, train=True,
                   rngs={"dropout": jax.random.PRNGKey(2)})["tokens"]
  assert not np.allclose(r1, r2)


def test_create_vit_applies_overrides_and_warns_on_narrow_width(tiny_config, caplog):
  tiny_config.model.patch_size = 8  # 8·8·3 = 192 values per patch > width 64.
  with caplog.at_level("WARNING"):
    model = models.create_vit(tiny_config.model)
  assert (model.width, model.patch_size, model.depth) == (64, 8, 2)
  assert "exceeds the width" in caplog.text
