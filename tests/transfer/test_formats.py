"""Backbones out to and back from big_vision, timm and Hugging Face layouts: same numbers."""
import json
import os

import jax
import numpy as np
import pytest

from ebm_vision import export
from ebm_vision.models import vit
from ebm_vision.transfer import formats, pretrained

MANIFEST = os.path.join(os.path.dirname(__file__), "timm_vit_manifest.json")


def tiny_vit(class_token: bool, posemb="learn"):
  model = vit.ViT(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=4, posemb=posemb,
                  class_token=class_token, pool_type="gap")
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  # Non-zero class token and biases, so that a misplaced one shows.
  params = jax.tree.map(lambda p: np.asarray(p) + 0.01 * np.random.default_rng(p.size).normal(
      size=p.shape).astype(np.float32), params)
  return model, params


@pytest.mark.parametrize("fmt", ["big_vision", "timm", "hf"])
@pytest.mark.parametrize("class_token", [False, True])
def test_export_then_import_gives_the_same_parameters_and_features(tmp_path, fmt, class_token):
  if fmt == "hf" and not class_token:
    pytest.skip("ViTModel always has a class token (see formats.to_hf)")
  model, params = tiny_vit(class_token)
  spec = formats.spec_of(model, 16)
  out = str(tmp_path / ("w.npz" if fmt == "big_vision" else "w"))
  formats.save(out, fmt, params, spec, (0.5,) * 3, (0.25,) * 3)
  assert formats.detect(out) == fmt
  loaded, loaded_spec, _ = formats.load(out)
  assert loaded_spec == spec
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), loaded, params)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
  reloaded_model, reloaded = pretrained.load_pretrained(out)
  np.testing.assert_array_equal(
      reloaded_model.apply({"params": reloaded}, images)["pre_logits"],
      model.apply({"params": params}, images)["pre_logits"])


def test_sincos_position_embeddings_are_written_out(tmp_path):
  model, params = tiny_vit(False, posemb="sincos2d")
  assert "pos_embedding" not in params
  arrays = formats.to_big_vision(params, formats.spec_of(model, 16))
  np.testing.assert_array_equal(arrays["params/pos_embedding"],
                                vit.sincos2d_posemb((4, 4), 32))
  assert "params/Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel" in arrays


def test_timm_names_and_shapes_match_timms_own_state_dict():
  """The manifest is timm's VisionTransformer(img_size=16, patch_size=4, embed_dim=32,
  depth=2, num_heads=2, mlp_ratio=2, class_token=True, no_embed_class=True, global_pool="avg",
  fc_norm=False).state_dict(), names and shapes (timm 1.0.31)."""
  with open(MANIFEST) as f:
    manifest = json.load(f)
  model, params = tiny_vit(True)
  state = formats.to_timm(params, formats.spec_of(model, 16))
  assert {k: list(v.shape) for k, v in state.items()} == manifest


def test_qkv_is_fused_in_query_key_value_order():
  model, params = tiny_vit(False)
  state = formats.to_timm(params, formats.spec_of(model, 16))
  attention = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  x = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
  fused = x @ state["blocks.0.attn.qkv.weight"].T + state["blocks.0.attn.qkv.bias"]
  for i, name in enumerate(("query", "key", "value")):
    flax_out = np.einsum("nd,dhk->nhk", x, attention[name]["kernel"]) + attention[name]["bias"]
    np.testing.assert_allclose(fused[:, 32 * i:32 * (i + 1)], flax_out.reshape(5, 32),
                               rtol=1e-5, atol=1e-6)


def test_timm_checkpoint_with_a_class_token_entry_is_folded(tmp_path):
  """timm's default (MAE's weights): the position table has an entry for the class token."""
  model, params = tiny_vit(True)
  state = formats.to_timm(params, formats.spec_of(model, 16))
  entry = np.full((1, 1, 32), 0.5, np.float32)
  state["pos_embed"] = np.concatenate([entry, state["pos_embed"]], axis=1)
  state["cls_token"] = state["cls_token"] - entry
  with pytest.raises(ValueError, match="width 32 is not a standard ViT width"):
    formats.from_timm(state)
  loaded, spec = formats.from_timm(state, num_heads=2)
  assert spec.class_token and spec.num_heads == 2
  np.testing.assert_allclose(loaded["cls"], params["cls"], atol=1e-6)
  np.testing.assert_allclose(loaded["pos_embedding"], params["pos_embedding"], rtol=1e-6)


@pytest.mark.slow
def test_export_command_writes_each_format_and_lists_what_stays(pretrained_workdir, tmp_path,
                                                                 caplog):
  with caplog.at_level("INFO"):
    written = export.export(pretrained_workdir, None, "timm", str(tmp_path / "timm"))
  assert sorted(os.path.basename(p) for p in written) == ["config.json", "model.safetensors"]
  assert "left behind: restore" in caplog.text
  model, params = pretrained.load_pretrained(pretrained_workdir)
  timm_model, timm_params = pretrained.load_pretrained(str(tmp_path / "timm"))
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  np.testing.assert_allclose(timm_model.apply({"params": timm_params}, images)["pre_logits"],
                             model.apply({"params": params}, images)["pre_logits"], atol=1e-6)
  with pytest.raises(Exception, match="--step='x'"):
    export.export(pretrained_workdir, "x", "hf", str(tmp_path / "hf"))


def test_features_match_timm_and_transformers_where_installed(tmp_path):
  """One-off check, skipped where torch is absent (CI): see README, 'Weights in and out'."""
  torch = pytest.importorskip("torch")
  timm = pytest.importorskip("timm")
  transformers = pytest.importorskip("transformers")
  model, params = tiny_vit(True)
  spec = formats.spec_of(model, 16)
  images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
  out = model.apply({"params": params}, images)
  formats.save(str(tmp_path / "timm"), "timm", params, spec, (0.5,) * 3, (0.25,) * 3)
  timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
  with torch.no_grad():
    timm_features = timm_model.forward_head(timm_model.forward_features(
        torch.from_numpy(images.transpose(0, 3, 1, 2))), pre_logits=True).numpy()
  np.testing.assert_allclose(timm_features, out["pre_logits"], atol=1e-4)
  formats.save(str(tmp_path / "hf"), "hf", params, spec, (0.5,) * 3, (0.25,) * 3)
  hf_model = transformers.ViTModel.from_pretrained(str(tmp_path / "hf"),
                                                   add_pooling_layer=False).eval()
  with torch.no_grad():
    hidden = hf_model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))
                      ).last_hidden_state.numpy()
  np.testing.assert_allclose(hidden, out["encoded"], atol=1e-4)
