"""ViT backbones in other codebases' layouts: big_vision .npz, timm and Hugging Face safetensors.

Every converter maps between this project's ViT parameters (big_vision's names, Flax
layouts) and a flat {name: numpy array} in the other layout, plus a `ViTSpec` that says
what the arrays do not: the number of heads, the image size, whether there is a class
token. Position embeddings always travel as a table (a sin-cos embedding is written
out), so every format loads into a ViT with learned position embeddings.

  big_vision  'params/<path>' as in big_vision's ViT; read by big_vision's `load_params`
              and timm's .npz loader.
  timm        timm `VisionTransformer` state dict: qkv fused, kernels transposed; the
              folder also gets timm's config.json (`timm.create_model('local-dir:<folder>')`).
  hf          Hugging Face `ViTModel` state dict and config.json. ViTModel always has a
              class token: a backbone without one gets a zero token, which its patch
              tokens then also attend to (their outputs differ; see `to_hf`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import flax
import numpy as np

from ebm_vision.models import vit

FORMATS = ("big_vision", "timm", "hf")
WEIGHTS_FILE = {"timm": "model.safetensors", "hf": "model.safetensors"}
# Heads of the standard widths (VARIANTS), for checkpoints that do not record them.
HEADS_BY_WIDTH = {width: heads for width, _, _, heads in vit.VARIANTS.values()}
LAYERNORM_EPS = 1e-6  # Flax's LayerNorm default, as in big_vision, timm's ViT and MAE.


@dataclasses.dataclass
class ViTSpec:
  """The architecture of a converted backbone (what the arrays alone do not say)."""
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_size: int
  image_size: int
  class_token: bool

  def model_config(self, pool_type: str = "gap") -> dict:
    """Fields of `config.model` that rebuild this backbone (position embeddings learned)."""
    return dict(variant=f"B/{self.patch_size}", width=self.width, depth=self.depth,
                mlp_dim=self.mlp_dim, num_heads=self.num_heads, patch_size=self.patch_size,
                posemb="learn", pool_type=pool_type, class_token=self.class_token,
                drop_path_rate=0., compute_dtype="float32", remat_blocks=False)


def spec_of(model: vit.ViT, image_size: int) -> ViTSpec:
  return ViTSpec(model.width, model.depth, model.mlp_dim, model.num_heads, model.patch_size,
                 image_size, model.has_class_token)


def position_table(params: dict, spec: ViTSpec) -> np.ndarray:
  """The [1, N, D] position embedding of the patches: learned, or the sin-cos one."""
  if "pos_embedding" in params:
    return np.asarray(params["pos_embedding"])
  grid = spec.image_size // spec.patch_size
  return np.asarray(vit.sincos2d_posemb((grid, grid), spec.width))


def backbone_only(params: dict) -> tuple[dict, list[str]]:
  """(params without the classification head, names of what was dropped)."""
  dropped = [name for name in params if name == "head"]
  return {k: v for k, v in params.items() if k != "head"}, dropped


# ------------------------------------------------------------------ big_vision
# The original ViT repository's names, which big_vision renamed.
_OLD_VIT_NAMES = (("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0"),
                  ("MlpBlock_3", "MlpBlock_0"), ("LayerNorm_2", "LayerNorm_1"))


def to_big_vision(params: dict, spec: ViTSpec) -> dict[str, np.ndarray]:
  """{'params/<path>': array} with the position embedding written out."""
  params = {**params, "pos_embedding": position_table(params, spec)}
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  return {f"params/{k}": np.asarray(v, np.float32) for k, v in flat.items()}


def from_big_vision(arrays: dict[str, np.ndarray], num_heads: Optional[int] = None,
                    image_size: Optional[int] = None) -> tuple[dict, ViTSpec]:
  """Params and spec from a big_vision / ViT-repository .npz (any of their prefixes)."""
  for prefix in ("params/img/", "params/", "opt/target/", ""):
    if f"{prefix}embedding/kernel" in arrays:
      break
  else:
    raise ValueError("not a ViT checkpoint: no 'embedding/kernel' under params/, opt/target/ "
                     "or at the top level")
  flat = {}
  for key, value in arrays.items():
    if not key.startswith(prefix) or key[len(prefix):].startswith(("head/", "pre_logits/")):
      continue
    name = key[len(prefix):].replace("Transformer/posembed_input/pos_embedding",
                                     "pos_embedding")
    for old, new in _OLD_VIT_NAMES:
      name = name.replace(old, new)
    flat[name] = np.asarray(value, np.float32)
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  kernel = flat["embedding/kernel"]
  depth = sum(1 for k in flat if k.endswith("LayerNorm_0/scale"))
  width = kernel.shape[-1]
  query = flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]
  pos = flat["pos_embedding"]
  class_token = "cls" in flat
  if pos.shape[1] == _grid_tokens(pos.shape[1] - 1) + 1 and class_token:  # Old ViT: cls entry.
    params["cls"] = params["cls"] + pos[:, :1]
    params["pos_embedding"] = pos[:, 1:]
  grid = int(round(params["pos_embedding"].shape[1]**0.5))
  spec = ViTSpec(width=width, depth=depth,
                 mlp_dim=flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1],
                 num_heads=num_heads or query.shape[1], patch_size=kernel.shape[0],
                 image_size=image_size or grid * kernel.shape[0], class_token=class_token)
  return params, spec


def _grid_tokens(n: int) -> int:
  """n if n is a square number of patch tokens, else -1."""
  side = int(round(n**0.5))
  return n if side * side == n else -1


# ------------------------------------------------------------------------ timm
def to_timm(params: dict, spec: ViTSpec) -> dict[str, np.ndarray]:
  """timm VisionTransformer state dict (class_token=spec.class_token, no_embed_class=True)."""
  t = lambda x: np.ascontiguousarray(np.asarray(x, np.float32).T)
  d = spec.width
  out = {"patch_embed.proj.weight": np.ascontiguousarray(
             np.asarray(params["embedding"]["kernel"], np.float32).transpose(3, 2, 0, 1)),
         "patch_embed.proj.bias": np.asarray(params["embedding"]["bias"], np.float32),
         "pos_embed": position_table(params, spec).astype(np.float32)}
  if spec.class_token:
    out["cls_token"] = np.asarray(params["cls"], np.float32)
  for i in range(spec.depth):
    b = params["Transformer"][f"encoderblock_{i}"]
    att, mlp, p = b["MultiHeadDotProductAttention_0"], b["MlpBlock_0"], f"blocks.{i}."
    for norm, name in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_1")):
      out[p + norm + ".weight"], out[p + norm + ".bias"] = b[name]["scale"], b[name]["bias"]
    out[p + "attn.qkv.weight"] = np.concatenate(
        [t(np.asarray(att[n]["kernel"]).reshape(d, -1)) for n in ("query", "key", "value")])
    out[p + "attn.qkv.bias"] = np.concatenate(
        [np.asarray(att[n]["bias"]).reshape(-1) for n in ("query", "key", "value")])
    out[p + "attn.proj.weight"] = t(np.asarray(att["out"]["kernel"]).reshape(-1, d))
    out[p + "attn.proj.bias"] = att["out"]["bias"]
    for j in range(2):
      out[p + f"mlp.fc{j + 1}.weight"] = t(mlp[f"Dense_{j}"]["kernel"])
      out[p + f"mlp.fc{j + 1}.bias"] = mlp[f"Dense_{j}"]["bias"]
  norm = params["Transformer"]["encoder_norm"]
  out["norm.weight"], out["norm.bias"] = norm["scale"], norm["bias"]
  return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def timm_config(spec: ViTSpec, pixel_mean, pixel_std, pool_type: str = "gap") -> dict:
  """timm's config.json: `timm.create_model('local-dir:<folder>', pretrained=True)` builds
  the same network (tanh GELU as Flax's, LayerNorm ε 1e-6, norm before pooling)."""
  return {
      "architecture": "vit_base_patch16_224",  # Its model_args below set every size.
      "num_classes": 0,
      "model_args": {
          "img_size": spec.image_size, "patch_size": spec.patch_size, "embed_dim": spec.width,
          "depth": spec.depth, "num_heads": spec.num_heads,
          "mlp_ratio": spec.mlp_dim / spec.width, "class_token": spec.class_token,
          "no_embed_class": True, "global_pool": "token" if pool_type == "token" else "avg",
          "fc_norm": False, "act_layer": "gelu_tanh"},
      "pretrained_cfg": {
          "input_size": [3, spec.image_size, spec.image_size], "mean": list(pixel_mean),
          "std": list(pixel_std), "num_classes": 0, "crop_pct": 1.0,
          "interpolation": "bicubic", "first_conv": "patch_embed.proj", "classifier": "head"},
  }


def from_timm(state: dict[str, np.ndarray], num_heads: Optional[int] = None,
              image_size: Optional[int] = None) -> tuple[dict, ViTSpec]:
  """Params and spec from a timm VisionTransformer state dict (e.g. MAE's weights as
  timm publishes them). A class token's position embedding is folded into the token."""
  state = {k: np.asarray(v, np.float32) for k, v in state.items()}
  patch = state["patch_embed.proj.weight"]
  d, p = patch.shape[0], patch.shape[-1]
  depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
  heads = num_heads or HEADS_BY_WIDTH.get(d)
  if heads is None:
    raise ValueError(f"width {d} is not a standard ViT width: give num_heads")
  pos = state["pos_embed"]
  class_token = "cls_token" in state
  params = {"embedding": {"kernel": patch.transpose(2, 3, 1, 0),
                          "bias": state["patch_embed.proj.bias"]}}
  if class_token:
    params["cls"] = state["cls_token"]
    if _grid_tokens(pos.shape[1]) < 0:  # timm's default: the class token has an entry.
      params["cls"] = params["cls"] + pos[:, :1]
      pos = pos[:, 1:]
  params["pos_embedding"] = pos
  blocks = {}
  for i in range(depth):
    g = lambda name: state[f"blocks.{i}.{name}"]  # pylint: disable=cell-var-from-loop
    q, k, v = np.split(g("attn.qkv.weight"), 3)
    qb, kb, vb = np.split(g("attn.qkv.bias"), 3)
    qkv = lambda w, b: {"kernel": w.T.reshape(d, heads, d // heads),
                        "bias": b.reshape(heads, d // heads)}
    blocks[f"encoderblock_{i}"] = {
        "LayerNorm_0": {"scale": g("norm1.weight"), "bias": g("norm1.bias")},
        "MultiHeadDotProductAttention_0": {
            "query": qkv(q, qb), "key": qkv(k, kb), "value": qkv(v, vb),
            "out": {"kernel": g("attn.proj.weight").T.reshape(heads, d // heads, d),
                    "bias": g("attn.proj.bias")}},
        "LayerNorm_1": {"scale": g("norm2.weight"), "bias": g("norm2.bias")},
        "MlpBlock_0": {f"Dense_{j}": {"kernel": g(f"mlp.fc{j + 1}.weight").T,
                                      "bias": g(f"mlp.fc{j + 1}.bias")} for j in range(2)}}
  norm = "norm" if "norm.weight" in state else "fc_norm"
  blocks["encoder_norm"] = {"scale": state[f"{norm}.weight"], "bias": state[f"{norm}.bias"]}
  params["Transformer"] = blocks
  grid = int(round(pos.shape[1]**0.5))
  spec = ViTSpec(d, depth, state["blocks.0.mlp.fc1.weight"].shape[0], heads, p,
                 image_size or grid * p, class_token)
  return params, spec


# ---------------------------------------------------------------- Hugging Face
def to_hf(params: dict, spec: ViTSpec) -> dict[str, np.ndarray]:
  """Hugging Face ViTModel state dict. Its position table has a class-token entry first:
  the class token's own embedding goes there (so token + entry = this model's token); a
  backbone without a class token gets zeros."""
  timm = to_timm(params, spec)
  d = spec.width
  cls = timm.get("cls_token", np.zeros((1, 1, d), np.float32))
  out = {"embeddings.cls_token": np.zeros_like(cls),
         "embeddings.position_embeddings": np.concatenate([cls, timm["pos_embed"]], axis=1),
         "embeddings.patch_embeddings.projection.weight": timm["patch_embed.proj.weight"],
         "embeddings.patch_embeddings.projection.bias": timm["patch_embed.proj.bias"],
         "layernorm.weight": timm["norm.weight"], "layernorm.bias": timm["norm.bias"]}
  for i in range(spec.depth):
    src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
    for n, w in zip(("query", "key", "value"), np.split(timm[src + "attn.qkv.weight"], 3)):
      out[dst + f"attention.attention.{n}.weight"] = np.ascontiguousarray(w)
    for n, b in zip(("query", "key", "value"), np.split(timm[src + "attn.qkv.bias"], 3)):
      out[dst + f"attention.attention.{n}.bias"] = np.ascontiguousarray(b)
    for a, b in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                 ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"),
                 ("norm2", "layernorm_after")):
      for part in ("weight", "bias"):
        out[f"{dst}{b}.{part}"] = timm[f"{src}{a}.{part}"]
  return out


def hf_config(spec: ViTSpec) -> dict:
  """Hugging Face ViTConfig for `to_hf`'s weights (tanh GELU, LayerNorm ε 1e-6)."""
  return {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": spec.width,
          "num_hidden_layers": spec.depth, "num_attention_heads": spec.num_heads,
          "intermediate_size": spec.mlp_dim, "hidden_act": "gelu_pytorch_tanh",
          "layer_norm_eps": LAYERNORM_EPS, "image_size": spec.image_size,
          "patch_size": spec.patch_size, "num_channels": 3, "qkv_bias": True,
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def from_hf(state: dict[str, np.ndarray], config: dict) -> tuple[dict, ViTSpec]:
  """Params and spec from a Hugging Face ViTModel (or ViT…ForImageClassification) state
  dict and its config; the class token is kept (ViT always has one)."""
  state = {k[len("vit."):] if k.startswith("vit.") else k: np.asarray(v, np.float32)
           for k, v in state.items()}
  pos = state["embeddings.position_embeddings"]
  timm = {"patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
          "cls_token": state["embeddings.cls_token"] + pos[:, :1], "pos_embed": pos[:, 1:],
          "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
  for i in range(config["num_hidden_layers"]):
    src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
    for part in ("weight", "bias"):
      timm[dst + f"attn.qkv.{part}"] = np.concatenate(
          [state[src + f"attention.attention.{n}.{part}"] for n in ("query", "key", "value")])
      for a, b in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                   ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"),
                   ("norm2", "layernorm_after")):
        timm[f"{dst}{a}.{part}"] = state[f"{src}{b}.{part}"]
  return from_timm(timm, num_heads=config["num_attention_heads"],
                   image_size=config.get("image_size"))


# ------------------------------------------------------------------ files
def save(folder_or_file: str, fmt: str, params: dict, spec: ViTSpec, pixel_mean, pixel_std,
         pool_type: str = "gap") -> list[str]:
  """Writes `params` in `fmt`: big_vision → one .npz file; timm / hf → a folder with
  model.safetensors and config.json. Returns the paths written."""
  if fmt == "big_vision":
    with open(folder_or_file, "wb") as f:
      np.savez(f, **to_big_vision(params, spec))
    return [folder_or_file]
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(folder_or_file, exist_ok=True)
  weights = os.path.join(folder_or_file, WEIGHTS_FILE[fmt])
  config = os.path.join(folder_or_file, "config.json")
  if fmt == "timm":
    save_file(to_timm(params, spec), weights)
    text = timm_config(spec, pixel_mean, pixel_std, pool_type)
  else:
    save_file(to_hf(params, spec), weights)
    text = hf_config(spec)
  with open(config, "w") as f:
    json.dump(text, f, indent=1)
  return [weights, config]


def detect(path: str) -> Optional[str]:
  """The format of an exported file or folder ('big_vision', 'timm', 'hf'), or None."""
  if os.path.isfile(path) and path.endswith(".npz"):
    return "big_vision"
  weights = path
  if os.path.isdir(path):
    weights = os.path.join(path, "model.safetensors")
  if not (os.path.isfile(weights) and weights.endswith(".safetensors")):
    return None
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(weights, framework="numpy") as f:
    keys = set(f.keys())
  if "patch_embed.proj.weight" in keys:
    return "timm"
  if keys & {"embeddings.patch_embeddings.projection.weight",
             "vit.embeddings.patch_embeddings.projection.weight"}:
    return "hf"
  return None


def load(path: str, num_heads: Optional[int] = None) -> tuple[dict, ViTSpec, str]:
  """(params, spec, format) of a big_vision .npz, or a timm / Hugging Face safetensors file
  or folder (its config.json, when present, gives heads and image size)."""
  fmt = detect(path)
  if fmt is None:
    raise FileNotFoundError(f"{path}: not a big_vision .npz, nor a timm / Hugging Face "
                            "safetensors file or folder")
  if fmt == "big_vision":
    with open(path, "rb") as f:
      return (*from_big_vision(dict(np.load(f)), num_heads), fmt)
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  weights = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
  config_path = os.path.join(folder, "config.json")
  config = {}
  if os.path.isfile(config_path):
    with open(config_path) as f:
      config = json.load(f)
  state = load_file(weights)
  if fmt == "hf":
    if not config:
      raise FileNotFoundError(f"{config_path} is missing: a Hugging Face checkpoint needs "
                              "its config.json")
    return (*from_hf(state, config), fmt)
  args = config.get("model_args", {})
  return (*from_timm(state, num_heads or args.get("num_heads"), args.get("img_size")), fmt)
