"""Vision Transformer backbone in Flax linen.

Parameter names follow big_vision's ViT (`embedding`, `pos_embedding`, `cls`,
`Transformer/encoderblock_{i}/...`, `Transformer/encoder_norm`, `head`) so that
checkpoints travel between the two codebases.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ebm_vision.parallel import partitioning

# name: (width, depth, mlp_dim, num_heads), as in ViT / big_vision.
VARIANTS = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}
POSEMBS = ("learn", "sincos2d")
POOLS = ("gap", "token")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def decode_variant(variant: str) -> dict[str, int]:
  """'B/16' -> dict(width, depth, mlp_dim, num_heads, patch_size)."""
  name, _, patch = variant.partition("/")
  if name not in VARIANTS or not patch.isdigit():
    raise ValueError(
        f"model variant {variant!r} must be '<size>/<patch>' with size in "
        f"{sorted(VARIANTS)}, e.g. 'B/16'")
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads,
              patch_size=int(patch))


def sincos2d_posemb(grid: Sequence[int], width: int,
                    temperature: float = 10_000.) -> jnp.ndarray:
  """Fixed 2-D sine-cosine position embedding, [1, h*w, width] (MAE, big_vision)."""
  h, w = grid
  if width % 4:
    raise ValueError(f"sincos2d position embedding needs width % 4 == 0, got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1. / temperature**(np.arange(width // 4) / (width // 4 - 1 or 1))
  y = np.einsum("m,d->md", y.flatten(), omega)
  x = np.einsum("m,d->md", x.flatten(), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return jnp.asarray(pe, jnp.float32)[None]


def resample_posemb(posemb: jnp.ndarray, new_grid: Sequence[int]) -> jnp.ndarray:
  """Bilinearly resamples a [1, h*w, D] position embedding to [1, h'*w', D].

  The old grid is taken to be square. A class-token embedding, if any, must be
  split off by the caller.
  """
  _, n, d = posemb.shape
  side = int(round(n**0.5))
  if side * side != n:
    raise ValueError(f"cannot resample a non-square grid of {n} position embeddings")
  if tuple(new_grid) == (side, side):
    return posemb
  grid = posemb.reshape(side, side, d)
  grid = jax.image.resize(grid, (*new_grid, d), method="bilinear", antialias=False)
  return grid.reshape(1, -1, d)


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if self.rate == 0. or deterministic:
      return x
    keep = 1. - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class MlpBlock(nn.Module):
  """Transformer MLP: Dense -> GELU -> Dense."""
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype,
                 kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))(x)
    x = partitioning.constrain(nn.gelu(x), ("batch", None, "mlp"))
    return nn.Dense(d, dtype=self.dtype,
                    kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(stddev=1e-6))(x)


class Encoder1DBlock(nn.Module):
  """Pre-norm transformer block with XLA attention (twice differentiable).

  Activations carry logical sharding constraints ('batch', 'mlp'); they take effect
  inside `ebm_vision.partitioning.activation_sharding` and are no-ops elsewhere.
  """
  mlp_dim: int
  num_heads: int
  drop_path: float = 0.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool):
    x = partitioning.constrain(x, ("batch", None, None))
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        deterministic=True)(y, y)
    x = x + DropPath(self.drop_path)(y, deterministic)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MlpBlock(self.mlp_dim, dtype=self.dtype)(y)
    return x + DropPath(self.drop_path)(y, deterministic)


class Encoder(nn.Module):
  """Stack of blocks; drop-path rate grows linearly with depth. Returns every block's
  output [depth, B, N, D] and the last one's after the final norm.

  With `remat_blocks`, each block keeps only its input for the backward pass and
  recomputes the rest (less memory, one more forward pass).
  """
  depth: int
  mlp_dim: int
  num_heads: int
  drop_path_rate: float = 0.
  dtype: Any = jnp.float32
  remat_blocks: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool):
    block = Encoder1DBlock
    if self.remat_blocks:
      block = nn.remat(Encoder1DBlock, static_argnums=(2,))  # 0 is self, 2 `deterministic`.
    outputs = []
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = block(self.mlp_dim, self.num_heads, rate, self.dtype,
                name=f"encoderblock_{i}")(x, deterministic)
      outputs.append(x)
    return jnp.stack(outputs), nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)


class ViT(nn.Module):
  """ViT backbone; returns a dict of intermediate outputs.

  Keys: `embedded` (patch + position embeddings, the first block's input, [B, N, D]),
  `block_tokens` (every block's output, [depth, B, N, D]), `tokens` (the last block's
  output before the final norm, [B, N, D]),
  `encoded` (after `encoder_norm`), `pre_logits` (pooled, [B, D]) and, with
  `num_classes`, `logits`. Outputs are float32 when computing in bfloat16. Token
  outputs include the class token first when the model has one.
  """
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_size: int
  posemb: str = "sincos2d"
  pool_type: str = "gap"
  num_classes: Optional[int] = None
  drop_path_rate: float = 0.
  dtype: Any = jnp.float32
  remat_blocks: bool = False
  class_token: Optional[bool] = None  # Prepend a learned 'cls' token; None: iff pool_type='token'.

  @property
  def has_class_token(self) -> bool:
    return self.pool_type == "token" if self.class_token is None else self.class_token

  @nn.compact
  def __call__(self, images, *, train: bool = False, token_ids=None):
    """images [B, H, W, 3] -> dict of outputs.

    `token_ids` [B, n]: indices of the patch tokens to keep, after position
    embedding (MAE's encoder sees only the visible patches); None keeps all.
    """
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                dtype=self.dtype, name="embedding")(images.astype(self.dtype))
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if self.posemb == "learn":
      pos = self.param("pos_embedding", nn.initializers.normal(stddev=1 / d**0.5),
                       (1, h * w, d), jnp.float32)
    else:
      pos = sincos2d_posemb((h, w), d)
    x = x + pos.astype(self.dtype)
    if token_ids is not None:
      x = jnp.take_along_axis(x, token_ids[..., None], axis=1)
    if self.has_class_token:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, d), jnp.float32)
      x = jnp.concatenate([jnp.tile(cls.astype(self.dtype), (b, 1, 1)), x], axis=1)

    block_tokens, encoded = Encoder(self.depth, self.mlp_dim, self.num_heads,
                                    self.drop_path_rate, self.dtype, self.remat_blocks,
                                    name="Transformer")(x, deterministic=not train)
    out_dtype = jnp.promote_types(self.dtype, jnp.float32)
    out = {"block_tokens": block_tokens.astype(out_dtype),
           "tokens": block_tokens[-1].astype(out_dtype), "encoded": encoded.astype(out_dtype),
           "embedded": x.astype(out_dtype)}
    if self.pool_type == "token":
      pooled = encoded[:, 0]
    else:  # The mean of the patch tokens (a class token, if any, left out).
      pooled = encoded[:, int(self.has_class_token):].mean(axis=1)
    out["pre_logits"] = pooled.astype(out_dtype)
    if self.num_classes:
      out["logits"] = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                               name="head")(out["pre_logits"])
    return out
