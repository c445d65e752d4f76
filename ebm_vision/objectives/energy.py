"""Energy, restoration by gradient descent on the input, and the restoration loss.

    E_θ(x)            forward pass of the ViT, read out as a scalar per image
    x_{k+1} = x_k − α_k · m ⊙ ∇ₓE_θ(x_k) [+ √(2α_k)·σ·ε]      backward pass, k < K
    L(θ, α) = Σ_k d(x_k, x_clean) over the corrupted region

The parameter gradient of L flows through ∇ₓE (second-order autodiff): nothing
here stops gradients.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ebm_vision.data.patches import patch_statistics, patchify, unpatchify

# Energy read-outs of the last block's tokens h [B, N, D] (before the final norm).
# Both sum over tokens, so ∇ₓE per pixel does not shrink with the token count.
# (The same on LayerNorm'd tokens is nearly constant at init, as ‖LN(h)‖² ≈ D,
# which leaves restoration without a gradient: not offered.)
# 'sq_norm_residual' reads the same of h − z₀, what the blocks added to the patch
# embeddings z₀ (the energy then ignores the embedding's own norm).
# 'sq_norm_blocks' is the mean over blocks of the same of each block's output h_l: every
# block gets its own share of ∇ₓE (through itself and the blocks below), not only the
# gradient that comes down through the blocks above it.
# 'projected_sq_norm' reads ½ Σ_tokens mean_channels (LN(h)·P)² of the final-norm tokens (the
# transferred features) through a learned D×D map P, an energy head outside the ViT.
# 'reconstruction' is the energy of how far x is from what the network makes of it:
# E = ½ ‖x − f(x)‖², f(x) = the patches of a linear read-out of the final-norm tokens. Then
# ∇ₓE = (I − J_f)ᵀ (x − f(x)): a descent step moves x towards f(x), a direct output of the
# network, instead of relying on the Jacobian of ½‖h‖² alone (an energy parameterization
# that trains like a denoiser; Salimans & Ho 2021, "Should EBMs model the energy or the score?").
READOUTS = ("sq_norm", "sq_norm_pooled", "sq_norm_residual", "sq_norm_blocks",
            "projected_sq_norm", "reconstruction")
# Tokens the energy sums over: 'all', or 'uncorrupted' (those whose patch the corruption left
# at least partly intact; an image corrupted everywhere keeps all). With 'uncorrupted', a
# masked patch is restored only through what the visible tokens' outputs say about it.
ENERGY_TOKENS = ("all", "uncorrupted")
# Scale of the descent direction: 'none' steps by α·∇ₓE; 'rms' by α·∇ₓE / RMS(∇ₓE)
# per image over the pixels that move (α is then in units of the pixels' std).
STEP_NORMALIZATIONS = ("none", "rms")
# name -> jax.checkpoint policy for the restoration step (None: plain autodiff).
REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
LOSS_TYPES = ("mse", "smooth_l1")
# What the loss compares restored and clean images in: their 'pixels' (`restoration_loss`),
# each patch's histograms of oriented gradients ('hog', `hog.restoration_loss`), or both
# ('pixels_and_hog': the pixel loss plus loss.hog_weight × the HOG loss).
LOSS_TARGETS = ("pixels", "hog", "pixels_and_hog")
REGIONS = ("corrupted", "all")
# Which restoration steps the loss scores: the mean over 'all' K steps, the 'last' only, or
# 'increasing' weights k / Σk on step k (K = 2: 1/3 and 2/3).
LOSS_STEPS = ("all", "last", "increasing")
# Per-patch statistics of `loss.norm_pix`: 'clean' normalizes restored and clean patch alike
# by the clean patch's mean and std (an error weight 1 / σ²_clean); 'own' standardizes each
# side by its own (the loss ignores every patch's mean and contrast, as MAE's target does).
PATCH_STATS = ("clean", "own")

# How the parameter gradient goes through ∇ₓE: 'autodiff' differentiates the VJP that
# computed it; 'reverse_over_forward' is a custom VJP that recomputes, from (θ, x) alone,
# the reverse-mode gradient of the directional derivative jvp_x E(θ, x)[r].
SECOND_ORDER_MODES = ("autodiff", "reverse_over_forward")

# energy_fn(params, images [B, H, W, C]) -> energies [B].
EnergyFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def init_readout(readout: str, width: int, rng: jax.Array, patch_size: int = 0) -> dict:
  """Parameters of the read-out: {'kernel': P [D, D]} for 'projected_sq_norm'; a linear
  map of each token to its patch's pixels, {'kernel' [D, p·p·3], 'bias'}, for
  'reconstruction'; else {}."""
  if readout == "projected_sq_norm":
    return {"kernel": nn.initializers.lecun_normal()(rng, (width, width), jnp.float32)}
  if readout == "reconstruction":
    size = patch_size * patch_size * 3
    return {"kernel": 0.02 * jax.random.normal(rng, (width, size), jnp.float32),
            "bias": jnp.zeros((size,), jnp.float32)}
  return {}


def energy(model: nn.Module, params, images: jnp.ndarray, *, readout: str = "sq_norm",
           dropout_rng: Optional[jax.Array] = None,
           token_weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """E_θ(images) -> [batch] float32; drop path is active iff `dropout_rng` is given.

  params: {'model': ViT params, 'readout': `init_readout`'s (absent when empty)}.
  readout 'sq_norm': E = ½ Σ_tokens mean_channels h²  (every token's energy);
  readout 'sq_norm_pooled': E = ½ N · mean_channels (mean_tokens h)²  (the pooled feature's);
  readout 'sq_norm_residual': E = ½ Σ_tokens mean_channels (h − z₀)², z₀ the embedded patches;
  readout 'sq_norm_blocks': E = mean_blocks ½ Σ_tokens mean_channels h_l², h_l block l's output;
  readout 'projected_sq_norm': E = ½ Σ_tokens mean_channels (LN(h)·P)², LN the final norm;
  readout 'reconstruction': E = ½ Σ_patches ‖x_patch − LN(h)·V − b‖², V, b the read-out.
  token_weights [B, N]: weigh each token's term (the pooled read-out: a weighted mean);
  None weighs all tokens 1.
  """
  train = dropout_rng is not None
  out = model.apply({"params": params["model"]}, images, train=train,
                    rngs={"dropout": dropout_rng} if train else {})
  if readout == "reconstruction":
    encoded = out["encoded"][:, int(model.has_class_token):]  # Patch tokens only.
    predicted = encoded @ params["readout"]["kernel"] + params["readout"]["bias"]
    per_patch = 0.5 * jnp.sum(jnp.square(patchify(images, model.patch_size) - predicted), -1)
    w = jnp.ones(per_patch.shape) if token_weights is None else token_weights
    return jnp.sum(w * per_patch, axis=-1)
  h = out["block_tokens"] if readout == "sq_norm_blocks" else out["tokens"]
  if readout == "sq_norm_residual":
    h = h - out["embedded"]
  if readout == "projected_sq_norm":
    h = out["encoded"] @ params["readout"]["kernel"]
  w = jnp.ones(h.shape[-3:-1], h.dtype) if token_weights is None else token_weights
  if w.shape[1] == h.shape[-2] - 1:  # A class token (first) always counts.
    w = jnp.concatenate([jnp.ones_like(w[:, :1]), w], axis=1)
  if readout == "sq_norm_pooled":
    pooled = jnp.sum(h * w[..., None], axis=1) / jnp.maximum(w.sum(-1, keepdims=True), 1e-6)
    return 0.5 * h.shape[1] * jnp.mean(jnp.square(pooled), axis=-1)
  per_block = 0.5 * jnp.sum(w * jnp.mean(jnp.square(h), axis=-1), axis=-1)
  return per_block.mean(axis=0) if readout == "sq_norm_blocks" else per_block


def token_weights(tokens: str, region: jnp.ndarray, patch_size: int) -> Optional[jnp.ndarray]:
  """[B, N] weights of the energy's tokens under `tokens` (one of ENERGY_TOKENS) for a
  corrupted `region` [B, H, W, 1]; None for 'all'."""
  if tokens == "all":
    return None
  intact = (patchify(region, patch_size).mean(-1) < 1.).astype(jnp.float32)
  return jnp.where(intact.sum(-1, keepdims=True) > 0, intact, 1.)


def step_sizes(raw_step_size: jnp.ndarray) -> jnp.ndarray:
  """Positive step sizes α_k = softplus(raw_k)."""
  return jax.nn.softplus(raw_step_size)


def raw_step_size_init(step_size: float, num_steps: int) -> jnp.ndarray:
  """Inverse of `step_sizes` for a constant initial step size."""
  return jnp.full((num_steps,), jnp.log(jnp.expm1(step_size)), jnp.float32)


def input_gradient(energy_fn: EnergyFn, params, images: jnp.ndarray):
  """(E(images) [B], ∇ₓ Σ_b E(images)_b), by plain autodiff."""
  e, vjp = jax.vjp(lambda x: energy_fn(params, x), images)
  return e, vjp(jnp.ones_like(e))[0]


def reverse_over_forward_input_gradient(energy_fn: EnergyFn):
  """`input_gradient` with a custom VJP that keeps only (θ, x) from the forward pass.

  For cotangents (ē, r) of (E, ∇ₓE), the VJP is the gradient over (θ, x) of
  ⟨E, ē⟩ + jvp_x E(θ, x)[r] (reverse over forward): the forward-mode directional
  derivative replaces the stored backward graph of ∇ₓE.
  """
  @jax.custom_vjp
  def grad_fn(params, images):
    return input_gradient(energy_fn, params, images)

  def fwd(params, images):
    return grad_fn(params, images), (params, images)

  def bwd(residuals, cotangents):
    params, images = residuals
    e_bar, r = cotangents

    def directional(p, x):
      e, de = jax.jvp(lambda x: energy_fn(p, x), (x,), (r,))
      return jnp.vdot(e, e_bar) + jnp.sum(de)
    return jax.grad(directional, argnums=(0, 1))(params, images)

  grad_fn.defvjp(fwd, bwd)
  return grad_fn


def jitter_step_sizes(alphas: jnp.ndarray, keys: jax.Array, jitter: float) -> jnp.ndarray:
  """[K] step sizes -> [K, B] of α_k·u, u ~ U(1 − jitter, 1 + jitter) per image and step.

  keys [B]: one per image. Randomized step sizes (as Energy-Based Transformers train
  theirs) ask the descent to restore for any step near α, not one tuned step.
  """
  u = jax.vmap(lambda k: jax.random.uniform(k, alphas.shape, alphas.dtype, 1. - jitter,
                                            1. + jitter))(keys)
  return alphas[:, None] * u.T


def _normal(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
  """N(0, 1) noise shaped like `x`, from one key or from one key per image ([B] keys)."""
  if key.ndim == 2:
    return jax.vmap(lambda k, xi: jax.random.normal(k, xi.shape, xi.dtype))(key, x)
  return jax.random.normal(key, x.shape, x.dtype)


def _fold_in(key: jax.Array, data: int) -> jax.Array:
  """`jax.random.fold_in` of one key or of each of [B] keys."""
  if key.ndim == 2:
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
  return jax.random.fold_in(key, data)


def rms_over_mask(values: jnp.ndarray, mask: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """Per-image [B, 1, 1, 1] root mean square of `values` [B, H, W, C] where `mask` is 1."""
  axes = tuple(range(1, values.ndim))
  count = jnp.maximum(jnp.sum(jnp.broadcast_to(mask, values.shape), axes, keepdims=True), 1.)
  return jnp.sqrt(jnp.sum(jnp.square(values) * mask, axes, keepdims=True) / count + eps)


def restore(energy_fn: EnergyFn, params, corrupted: jnp.ndarray, alphas: jnp.ndarray,
            rng: jax.Array, *, update_mask: Optional[jnp.ndarray] = None,
            langevin_noise_scale: float = 0., interstep_noise_scale: float = 0.,
            remat: str = "nothing_saveable", second_order: str = "autodiff",
            unroll: bool = False, step_normalization: str = "none"):
  """K steps of gradient descent on the energy, starting from `corrupted`.

  Args:
    energy_fn: (params, images [B, H, W, C]) -> energies [B].
    params: its parameters.
    corrupted: starting images x_0.
    alphas: [K] step sizes, or [K, B] one per image; K is the number of steps.
    rng: key for Langevin and inter-step noise, or one key per image [B] (unused when
      both noise scales are 0).
    update_mask: [B, H, W, 1] in {0, 1}; only pixels where it is 1 move.
    langevin_noise_scale: σ of the Langevin term √(2α)·σ·ε; 0 for plain descent.
    interstep_noise_scale: s: each step's output x_k, before the next step starts from it,
      gets Gaussian noise (where `update_mask` is 1) of std s·RMS(x_k − x_{k−1}), the RMS of
      that image's step over the pixels that move (a constant for the gradient). The
      returned trajectory is the outputs without it; the next step must pull the perturbed
      iterate back. Relative to the step, the noise cannot be outgrown by a loss that
      ignores each patch's contrast.
    remat: a key of REMAT_POLICIES; rematerializes each step so memory stays flat in K.
    second_order: one of SECOND_ORDER_MODES (the same gradients, other memory and time).
    unroll: unroll the K steps into one straight-line program (XLA may fuse across
      steps, and its cost analysis then counts every step, not the loop body once).
    step_normalization: one of STEP_NORMALIZATIONS; 'rms' divides each image's ∇ₓE
      by its root mean square over the pixels that move.

  Returns:
    (trajectory [K, B, H, W, C] = x_1..x_K, energies [K, B] = E(x_0)..E(x_{K-1})).
  """
  mask = jnp.ones_like(corrupted[..., :1]) if update_mask is None else update_mask
  if second_order == "reverse_over_forward":
    grad_fn = reverse_over_forward_input_gradient(energy_fn)
  else:
    grad_fn = functools.partial(input_gradient, energy_fn)

  def step(x, inputs):
    alpha, key = inputs
    alpha = alpha.reshape(alpha.shape + (1,) * (x.ndim - alpha.ndim))  # [] or [B, 1, 1, 1].
    e, grad_x = grad_fn(params, x)
    if step_normalization == "rms":
      grad_x = grad_x / rms_over_mask(grad_x, mask)
    start = x
    x = x - alpha * mask * grad_x
    if langevin_noise_scale:
      x = x + jnp.sqrt(2. * alpha) * langevin_noise_scale * mask * _normal(key, x)
    start_of_next = x
    if interstep_noise_scale:
      std = interstep_noise_scale * jax.lax.stop_gradient(rms_over_mask(x - start, mask))
      start_of_next = x + std * mask * _normal(_fold_in(key, 1), x)
    return start_of_next, (x, e)

  if REMAT_POLICIES[remat] is not None:
    step = jax.checkpoint(step, policy=REMAT_POLICIES[remat])
  num_steps = alphas.shape[0]
  if rng.ndim == 2:  # One key per image: [K, B] keys, each image's noise from its own.
    keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num_steps))(rng), 0, 1)
  else:
    keys = jax.random.split(rng, num_steps)
  _, (trajectory, energies) = jax.lax.scan(step, corrupted, (alphas, keys), unroll=unroll)
  return trajectory, energies


def patch_normalizer(clean: jnp.ndarray, patch_size: int, eps: float = 1e-6):
  """Returns f(images) = (images − μ_patch) / σ_patch with the statistics of `clean`.

  Applied to both sides of the loss, this measures each patch's error in units of that
  clean patch's contrast: a per-patch weight 1 / σ², not MAE's target.
  """
  mean, std = patch_statistics(patchify(clean, patch_size), eps)
  return lambda x: unpatchify((patchify(x, patch_size) - mean) / std, clean.shape, patch_size)


def _standardized_patches(images: jnp.ndarray, patch_size: int, eps: float) -> jnp.ndarray:
  """[B, N, p·p·C]: each patch of `images` minus its mean, over sqrt(its variance + eps)."""
  patches = patchify(images, patch_size)
  mean, std = patch_statistics(patches, eps)
  return (patches - mean) / std


def standardize_patches(images: jnp.ndarray, patch_size: int, eps: float) -> jnp.ndarray:
  """Each patch minus its own mean, divided by sqrt(its own variance + eps).

  On both sides of the loss this is MAE's normalized-pixel target for a model whose
  output is an image: the loss ignores each patch's mean and contrast, and `eps`
  (a variance floor) bounds the gradient of a nearly flat restored patch.
  """
  return unpatchify(_standardized_patches(images, patch_size, eps), images.shape, patch_size)


def match_patch_statistics(images: jnp.ndarray, reference: jnp.ndarray, patch_size: int,
                           eps: float) -> jnp.ndarray:
  """`standardize_patches(images)` mapped back with each `reference` patch's mean and
  sqrt(variance + eps): what the loss with per-patch statistics 'own' compares, in pixels
  (as MAE's normalized-pixel predictions are shown with the clean patch's statistics)."""
  mean, std = patch_statistics(patchify(reference, patch_size), eps)
  return unpatchify(_standardized_patches(images, patch_size, eps) * std + mean, images.shape,
                    patch_size)


def restoration_loss(trajectory: jnp.ndarray, clean: jnp.ndarray,
                     region: jnp.ndarray, *, loss_type: str = "mse",
                     steps: str = "all", patch_size: Optional[int] = None,
                     patch_stats: str = "clean", patch_eps: float = 1e-6,
                     plain_images: Optional[jnp.ndarray] = None):
  """Distance between restored images and the clean one, averaged over `region`.

  Args:
    trajectory: [K, B, H, W, C] restored images after each step.
    clean: [B, H, W, C].
    region: [B, H, W, 1] weights (1 where the loss counts).
    loss_type: 'mse' (squared error) or 'smooth_l1' (Huber, β = 1).
    steps: one of LOSS_STEPS: 'all' averages the loss over the K steps, 'last' uses only
      x_K, 'increasing' weighs step k by k / Σk.
    patch_size: if given, per-patch normalized pixels on both sides.
    patch_stats: one of PATCH_STATS: 'clean' normalizes both sides with the clean
      patch's mean and std (`patch_normalizer`), 'own' each side with its own
      (`standardize_patches`).
    patch_eps: the variance floor of the normalization.
    plain_images: [B] bools, images compared in plain pixels despite `patch_size`.

  Returns:
    (loss scalar, per-step losses [K]).
  """
  plain_trajectory, plain_clean = trajectory, clean
  if patch_size and patch_stats == "clean":
    normalize = jax.vmap(patch_normalizer(clean, patch_size, patch_eps))
    trajectory, clean = normalize(trajectory), normalize(clean[None])[0]
  elif patch_size:
    normalize = functools.partial(standardize_patches, patch_size=patch_size, eps=patch_eps)
    trajectory, clean = jax.vmap(normalize)(trajectory), normalize(clean)
  if patch_size and plain_images is not None:
    plain = plain_images[:, None, None, None]
    trajectory = jnp.where(plain, plain_trajectory, trajectory)
    clean = jnp.where(plain, plain_clean, clean)
  diff = trajectory - clean[None]
  err = jnp.square(diff) if loss_type == "mse" else optax.huber_loss(diff, delta=1.)
  denom = jnp.maximum(region.sum() * clean.shape[-1], 1.)
  per_step = (err * region[None]).sum(axis=(1, 2, 3, 4)) / denom
  return jnp.dot(loss_step_weights(steps, per_step.shape[0]), per_step), per_step


def loss_step_weights(steps: str, num_steps: int) -> jnp.ndarray:
  """[K] weights, summing to 1, of the restoration steps' losses under `steps`."""
  if steps == "all":
    w = jnp.ones((num_steps,))
  elif steps == "last":
    w = jnp.zeros((num_steps,)).at[-1].set(1.)
  else:
    w = jnp.arange(1., num_steps + 1.)
  return w / w.sum()


def energy_ranking_loss(clean_energy: jnp.ndarray, other_energies: jnp.ndarray,
                        scale: float = 1.) -> jnp.ndarray:
  """mean softplus((E(clean) − E(x)) / scale) over the images x of `other_energies` [M, B].

  A logistic ranking term: zero-ish when the clean image has the lowest energy
  of its corrupted and restored versions, linear in the violation otherwise.
  """
  return jnp.mean(jax.nn.softplus((clean_energy[None] - other_energies) / scale))
