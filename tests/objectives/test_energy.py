"""Energy, restoration and the second-order restoration loss."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebm_vision import models
from ebm_vision.data.patches import patchify
from ebm_vision.models import vit
from ebm_vision.objectives import corruptions, energy, energy_pretraining, hog, train_step


@pytest.mark.parametrize("readout", energy.READOUTS)
def test_energy_is_one_float32_per_image(tiny_config, readout):
  model = models.create_vit(tiny_config.model)
  tiny_config.energy.readout = readout
  params = energy_pretraining.energy_params(
      energy_pretraining.init_params(model, tiny_config, jax.random.PRNGKey(0)))
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 16, 16, 3))
  e = energy.energy(model, params, x, readout=readout)
  chex.assert_shape(e, (5,))
  chex.assert_type(e, jnp.float32)
  assert np.all(np.asarray(e) > 0)
  # Per-image: changing image 0 changes only energy 0.
  e2 = energy.energy(model, params, x.at[0].multiply(2.), readout=readout)
  assert e2[0] != e[0]
  np.testing.assert_array_equal(e2[1:], e[1:])


def _loss_fn(model, clean, corrupted, region, remat, steps="all", norm_pix=False,
             second_order="autodiff", readout="sq_norm", step_normalization="none",
             tokens="all", patch_stats="clean"):
  def loss(params):
    efn = functools.partial(energy.energy, model, readout=readout,
                            token_weights=energy.token_weights(tokens, region, model.patch_size))
    alphas = energy.step_sizes(params["raw_step_size"])
    traj, _ = energy.restore(efn, energy_pretraining.energy_params(params), corrupted, alphas,
                             jax.random.PRNGKey(0),
                             update_mask=region, remat=remat, second_order=second_order,
                             step_normalization=step_normalization)
    return energy.restoration_loss(traj, clean, region, steps=steps,
                                   patch_size=2 if norm_pix else None,
                                   patch_stats=patch_stats, patch_eps=0.05)[0]
  return loss


@pytest.mark.parametrize("readout, step_normalization, tokens, patch_stats, depth", [
    ("sq_norm", "none", "all", "clean", 1), ("sq_norm_residual", "none", "all", "clean", 1),
    ("sq_norm_pooled", "rms", "uncorrupted", "clean", 1),
    ("sq_norm_blocks", "none", "uncorrupted", "own", 2),
    ("projected_sq_norm", "none", "all", "clean", 1),
    ("sq_norm", "none", "uncorrupted", "clean", 1),
    ("reconstruction", "none", "all", "clean", 1), ("sq_norm", "none", "all", "own", 1)])
def test_parameter_gradient_matches_central_finite_differences(readout, step_normalization,
                                                               tokens, patch_stats, depth):
  """The gradient flows through ∇ₓE (second order); float64 for exact differences."""
  with jax.enable_x64(True):
    model = vit.ViT(width=8, depth=depth, mlp_dim=16, num_heads=2, patch_size=2,
                    dtype=jnp.float64)
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    clean = jax.random.normal(k[0], (2, 4, 4, 3), jnp.float64)
    region = jnp.zeros((2, 4, 4, 1)).at[:, :2].set(1.).astype(jnp.float64)
    corrupted = jnp.where(region > 0, jax.random.normal(k[1], clean.shape, jnp.float64), clean)
    params = {"model": model.init(k[2], clean)["params"],
              "raw_step_size": jnp.array([0.3, -0.2], jnp.float64)}
    readout_params = energy.init_readout(readout, 8, k[0], patch_size=2)
    if readout_params:
      params["readout"] = readout_params
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    loss = jax.jit(_loss_fn(model, clean, corrupted, region, "none", norm_pix=True,
                            readout=readout, step_normalization=step_normalization,
                            tokens=tokens, patch_stats=patch_stats))
    grads = jax.grad(loss)(params)
    # The classic mistake (input gradient taken without its graph) leaves the
    # network's weights without gradient: they must have one.
    assert float(jnp.abs(grads["model"]["embedding"]["kernel"]).max()) > 1e-6
    assert float(jnp.abs(grads["model"]["Transformer"]["encoderblock_0"]["MlpBlock_0"]
                         ["Dense_1"]["kernel"]).max()) > 1e-6
    leaves, treedef = jax.tree.flatten(params)
    for i in range(3):
      direction = jax.tree.unflatten(treedef, [
          jax.random.normal(jax.random.fold_in(k[3], 10 * i + j), x.shape, x.dtype)
          for j, x in enumerate(leaves)])
      eps = 1e-6
      shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
      numeric = (loss(shifted(1.)) - loss(shifted(-1.))) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in
                     zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


@pytest.fixture(scope="module")
def plain_autodiff_gradients():
  """A tiny restoration problem and its parameter gradient by plain autodiff."""
  model = vit.ViT(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=4)
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  clean = jax.random.normal(k[0], (2, 16, 16, 3))
  region = jnp.ones((2, 16, 16, 1))
  corrupted = clean + jax.random.normal(k[1], clean.shape)
  params = {"model": model.init(k[2], clean)["params"], "raw_step_size": jnp.ones(3)}
  problem = (model, clean, corrupted, region)
  return problem, params, jax.grad(_loss_fn(*problem, "none"))(params)


@pytest.mark.slow
@pytest.mark.parametrize("remat, second_order, remat_blocks", [
    ("nothing_saveable", "autodiff", False), ("dots_saveable", "autodiff", False),
    ("none", "autodiff", True), ("none", "reverse_over_forward", False),
    ("nothing_saveable", "reverse_over_forward", True)])
def test_every_second_order_path_gives_plain_autodiff_gradients(
    plain_autodiff_gradients, remat, second_order, remat_blocks):
  """Step remat, per-block remat and the reverse-over-forward VJP change memory and time only."""
  (model, clean, corrupted, region), params, plain = plain_autodiff_gradients
  fast = model.clone(remat_blocks=remat_blocks)
  other = jax.grad(_loss_fn(fast, clean, corrupted, region, remat,
                            second_order=second_order))(params)
  chex.assert_trees_all_close(plain, other, rtol=1e-4, atol=1e-7)


def test_reverse_over_forward_passes_the_energy_cotangent():
  """Its VJP also carries the energies' cotangent, not only the input gradient's."""
  def efn(p, x):
    return jnp.sum(jnp.sin(p["w"] * x), axis=(1, 2, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 3))
  weights = jnp.array([0.7, -0.4])

  def loss(grad_fn, w):
    e, g = grad_fn({"w": w}, x)
    return jnp.vdot(e, weights) + jnp.sum(jnp.cos(g))
  plain = jax.grad(functools.partial(loss, functools.partial(energy.input_gradient, efn)))(1.3)
  custom = jax.grad(functools.partial(
      loss, energy.reverse_over_forward_input_gradient(efn)))(1.3)
  np.testing.assert_allclose(custom, plain, rtol=1e-5)


def test_update_mask_freezes_uncorrupted_pixels():
  efn = lambda _, x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))  # ∇ₓE = x.
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  mask = jnp.zeros((2, 8, 8, 1)).at[:, :4].set(1.)
  traj, energies = energy.restore(efn, {}, x0, jnp.array([0.25, 0.5]), jax.random.PRNGKey(1),
                                  update_mask=mask)
  chex.assert_shape(traj, (2, 2, 8, 8, 3))
  chex.assert_shape(energies, (2, 2))
  np.testing.assert_array_equal(traj[:, :, 4:], jnp.broadcast_to(x0[:, 4:], traj[:, :, 4:].shape))
  # On E = ½‖x‖², each step scales the moving pixels by (1 − α).
  np.testing.assert_allclose(traj[1, :, :4], x0[:, :4] * 0.75 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(energies[0], efn({}, x0), rtol=1e-6)


def test_residual_readout_ignores_the_patch_embeddings_own_norm():
  """With zero blocks' output (zeroed last layers), h = z₀: 'sq_norm' is ½Σ‖z₀‖², the residual 0."""
  model = vit.ViT(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  block = params["Transformer"]["encoderblock_0"]
  zero = lambda layer: jax.tree.map(jnp.zeros_like, layer)
  block = {**block, "MlpBlock_0": {**block["MlpBlock_0"], "Dense_1": zero(block["MlpBlock_0"]["Dense_1"])},
           "MultiHeadDotProductAttention_0": {**block["MultiHeadDotProductAttention_0"],
                                              "out": zero(block["MultiHeadDotProductAttention_0"]["out"])}}
  params = {**params, "Transformer": {**params["Transformer"], "encoderblock_0": block}}
  params = {"model": params}
  assert np.all(np.asarray(energy.energy(model, params, x, readout="sq_norm")) > 1.)
  np.testing.assert_allclose(energy.energy(model, params, x, readout="sq_norm_residual"), 0.,
                             atol=1e-10)


def test_blocks_readout_is_the_mean_of_each_blocks_sq_norm():
  """'sq_norm_blocks' of a 2-block ViT = the mean of 'sq_norm' of its first block alone
  (a 1-block ViT with those parameters) and 'sq_norm' of both blocks."""
  model = vit.ViT(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  first = {**params, "Transformer": {k: v for k, v in params["Transformer"].items()
                                     if k != "encoderblock_1"}}
  one_block = vit.ViT(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=4)
  both = energy.energy(model, {"model": params}, x)
  lower = energy.energy(one_block, {"model": first}, x)
  np.testing.assert_allclose(energy.energy(model, {"model": params}, x, readout="sq_norm_blocks"),
                             (lower + both) / 2, rtol=1e-5)
  assert np.all(np.abs(np.asarray(lower - both)) > 1e-3)  # The two blocks' energies differ.


def test_data_step_size_makes_the_first_step_as_long_as_the_error(tiny_config):
  model = models.create_vit(tiny_config.model)
  tiny_config.restore.langevin_noise_scale = 0.5  # The probe step leaves it out.
  params = energy_pretraining.init_params(model, tiny_config, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  alpha = energy_pretraining.data_step_size(params, clean, keys, model=model, config=tiny_config)
  tiny_config.restore.langevin_noise_scale = 0.
  r = energy_pretraining.corrupt_and_restore(model, tiny_config, params, clean, keys,
                                             train=False, step_sizes=alpha[None])
  rms = lambda x: jnp.sqrt(jnp.sum(jnp.square(x) * r.corrupted.region) /
                           jnp.sum(r.corrupted.region))
  np.testing.assert_allclose(rms(r.trajectory[0] - r.corrupted.images),
                             rms(clean - r.corrupted.images), rtol=1e-4)
  assert abs(float(alpha) - tiny_config.restore.init_step_size) > 0.1


def test_uncorrupted_tokens_leave_out_wholly_corrupted_patches():
  region = jnp.zeros((2, 8, 8, 1)).at[0, :4, :4].set(1.).at[0, :4, 4:6].set(1.).at[1].set(1.)
  weights = energy.token_weights("uncorrupted", region, patch_size=4)
  # Image 0: patch 0 wholly masked, patch 1 half (kept), 2 and 3 intact; image 1: all
  # corrupted, so all kept (a whole-image task).
  np.testing.assert_array_equal(weights, [[0., 1., 1., 1.], [1., 1., 1., 1.]])
  assert energy.token_weights("all", region, 4) is None
  model = vit.ViT(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  params = {"model": model.init(jax.random.PRNGKey(1), x)["params"]}
  h = model.apply({"params": params["model"]}, x)["tokens"]
  per_token = 0.5 * jnp.mean(jnp.square(h), axis=-1)
  np.testing.assert_allclose(energy.energy(model, params, x, token_weights=weights),
                             jnp.sum(per_token * weights, axis=-1), rtol=1e-6)


def test_reconstruction_energy_is_the_distance_to_the_readout():
  """E = ½‖x − f(x)‖²: with a zero read-out, f = 0, so E = ½‖x‖² and ∇ₓE = x; with a
  read-out bias b, E = ½‖x − b‖² per patch."""
  model = vit.ViT(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  readout = jax.tree.map(jnp.zeros_like, energy.init_readout("reconstruction", 16,
                                                             jax.random.PRNGKey(2), 4))
  params = {"model": model.init(jax.random.PRNGKey(1), x)["params"], "readout": readout}
  efn = functools.partial(energy.energy, model, readout="reconstruction")
  e, grad = energy.input_gradient(efn, params, x)
  np.testing.assert_allclose(e, 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(grad, x, rtol=1e-5, atol=1e-6)
  bias = jnp.linspace(-1., 1., 48)
  params["readout"] = {**readout, "bias": bias}
  expected = 0.5 * jnp.sum(jnp.square(patchify(x, 4) - bias), axis=(1, 2))
  np.testing.assert_allclose(efn(params, x), expected, rtol=1e-5)


def test_rms_step_is_scale_free_and_moves_by_alpha():
  """x − α·∇E/RMS(∇E): the same step for E and 10·E, of RMS α over the moving pixels."""
  efn = lambda w, x: w * jnp.sum(jnp.sin(x), axis=(1, 2, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  mask = jnp.zeros((2, 8, 8, 1)).at[:, :4].set(1.)
  run = lambda w: energy.restore(efn, w, x0, jnp.array([0.3]), jax.random.PRNGKey(1),
                                 update_mask=mask, step_normalization="rms")[0][0]
  np.testing.assert_allclose(run(1.), run(10.), rtol=1e-5, atol=1e-6)
  moved = (run(1.) - x0)[:, :4]
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(moved), axis=(1, 2, 3))), 0.3, rtol=1e-4)


def test_step_size_lr_multiplier_moves_the_step_size(tiny_config):
  """One scalar under AdamW moves by ~lr a step; the multiplier lets it move 100× faster."""
  from ebm_vision.run.optimizer import pretraining_optimizer
  model = models.create_vit(tiny_config.model)
  images = {"image": jax.random.randint(jax.random.PRNGKey(0), (8, 16, 16, 3), 0, 256,
                                        jnp.int32).astype(jnp.uint8)}

  def train(multiplier):
    """(|α change| after 3 steps, ViT params after the first step)."""
    c = tiny_config.copy_and_resolve_references()
    c.restore.step_size_lr_multiplier = multiplier
    tx, schedule = pretraining_optimizer(c)
    state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                     schedule=schedule))
    start = energy.step_sizes(state["params"]["restore"]["raw_step_size"])
    state, _ = step(state, images)
    after_one = jax.device_get(state["params"]["model"])
    for _ in range(2):
      state, _ = step(state, images)
    change = energy.step_sizes(state["params"]["restore"]["raw_step_size"]) - start
    return np.abs(np.asarray(change)), after_one

  slow, model_slow = train(1.)
  fast, model_fast = train(100.)
  assert np.all(fast > 30 * slow) and np.all(slow > 0)
  # The ViT's own parameters take the same first step either way.
  chex.assert_trees_all_close(model_slow, model_fast, rtol=1e-5, atol=1e-7)


def test_per_image_step_sizes_step_each_image_by_its_own():
  """alphas [K, B]: image b moves as if restored alone with the step sizes alphas[:, b]."""
  efn = lambda w, x: jnp.sum(jnp.sin(w * x), axis=(1, 2, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 3))
  alphas = jnp.array([[0.1, 0.2, 0.4], [0.3, 0.05, 0.2]])
  traj, _ = energy.restore(efn, 1.5, x0, alphas, jax.random.PRNGKey(1))
  for b in range(3):
    alone, _ = energy.restore(efn, 1.5, x0[b:b + 1], alphas[:, b], jax.random.PRNGKey(1))
    np.testing.assert_allclose(traj[:, b:b + 1], alone, rtol=1e-6)


def test_step_size_jitter_draws_per_image_factors_around_alpha():
  alphas = jnp.array([2., 0.5])
  keys = jax.random.split(jax.random.PRNGKey(0), 4096)
  jittered = energy.jitter_step_sizes(alphas, keys, 0.5)
  chex.assert_shape(jittered, (2, 4096))
  factors = np.asarray(jittered / alphas[:, None])
  assert factors.min() >= 0.5 and factors.max() <= 1.5
  np.testing.assert_allclose(factors.mean(1), 1., atol=0.02)
  np.testing.assert_allclose(factors.std(1), 1 / np.sqrt(12), atol=0.02)  # U(0.5, 1.5).
  assert np.corrcoef(factors)[0, 1] < 0.1  # Independent across steps.
  # The gradient still reaches the learned step sizes.
  grad = jax.grad(lambda a: energy.jitter_step_sizes(a, keys, 0.5).sum())(alphas)
  np.testing.assert_allclose(grad, factors.sum(1), rtol=1e-4)


@pytest.mark.parametrize("field,value", [("step_size_jitter", 0.5),
                                         ("interstep_noise_scale", 0.3)])
def test_randomized_restore_options_act_in_training_only(tiny_config, field, value):
  model = models.create_vit(tiny_config.model)
  params = energy_pretraining.init_params(model, tiny_config, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)

  def restored(v, train):
    c = tiny_config.copy_and_resolve_references()
    c.restore[field] = v
    c.model.drop_path_rate = 0.
    return energy_pretraining.corrupt_and_restore(model, c, params, clean, keys,
                                                  train=train).trajectory
  np.testing.assert_array_equal(restored(value, False), restored(0., False))
  np.testing.assert_array_equal(restored(0., True), restored(0., False))
  assert not np.allclose(restored(value, True), restored(0., True))


def test_clean_images_stay_clean_in_training_only(tiny_config):
  """With clean_image_fraction, some training images start clean, region kept; evaluation
  corrupts every image."""
  model = models.create_vit(tiny_config.model)
  c = tiny_config.copy_and_resolve_references()
  c.corruption.clean_image_fraction = 0.5
  params = energy_pretraining.init_params(model, c, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (64, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 64)

  def start(train):
    r = energy_pretraining.corrupt_and_restore(model, c, params, clean, keys, train=train)
    is_clean = np.all(np.asarray(r.corrupted.images == clean), axis=(1, 2, 3))
    assert np.all(np.asarray(r.corrupted.region).mean(axis=(1, 2, 3)) > 0.5)  # 75% masked.
    return is_clean
  kept = start(True)
  assert 16 <= kept.sum() <= 48  # Binomial(64, 0.5): outside this range with p < 1e-4.
  assert not start(False).any()
  loss, _ = energy_pretraining.loss(params, clean, keys, model=model, config=c)
  assert np.isfinite(float(loss))


@pytest.mark.parametrize("target,hog_weight", [("hog", 1.), ("pixels_and_hog", 0.5)])
def test_hog_targets_score_the_restoration_by_its_patch_hog(tiny_config, target, hog_weight):
  """loss.target='hog': the objective is `hog.restoration_loss` of the restoration;
  'pixels_and_hog': the pixel loss plus hog_weight × that. The ViT's weights get the
  gradient through ∇ₓE."""
  model = models.create_vit(tiny_config.model)
  c = tiny_config.copy_and_resolve_references()
  c.loss.target, c.loss.hog_cell_size, c.loss.hog_weight = target, 2, hog_weight
  params = energy_pretraining.init_params(model, c, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  (loss, aux), grads = jax.value_and_grad(energy_pretraining.loss, has_aux=True)(
      params, clean, keys, model=model, config=c)
  r = energy_pretraining.corrupt_and_restore(model, c, params, clean, keys, train=True)
  region = r.corrupted.region
  hog_loss, hog_per_step = hog.restoration_loss(r.trajectory, clean, region,
                                                patch_size=model.patch_size, cell_size=2)
  pixel_loss, pixel_per_step = 0., 0.
  if target == "pixels_and_hog":
    np.testing.assert_allclose(aux["hog_loss_per_step"], hog_per_step, rtol=1e-5)
    pixel_loss, pixel_per_step = energy.restoration_loss(
        r.trajectory, clean, region, loss_type=c.loss.type, steps=c.loss.steps,
        patch_size=model.patch_size if c.loss.norm_pix else None,
        patch_stats=c.loss.norm_pix_stats, patch_eps=c.loss.norm_pix_eps)
    assert float(pixel_loss) > 0.
  np.testing.assert_allclose(loss, pixel_loss + hog_weight * hog_loss, rtol=1e-5)
  np.testing.assert_allclose(aux["loss_per_step"], pixel_per_step + hog_weight * hog_per_step,
                             rtol=1e-5)
  assert float(jnp.abs(grads["model"]["embedding"]["kernel"]).max()) > 0.


def test_given_step_sizes_replace_the_learned_ones(tiny_config):
  """corrupt_and_restore(step_sizes=...) descends with those sizes, as many steps as given:
  the learned sizes reproduce the default, a zero first step leaves x_1 = x_0, and a longer
  schedule continues the same descent."""
  model = models.create_vit(tiny_config.model)
  params = energy_pretraining.init_params(model, tiny_config, jax.random.PRNGKey(0))
  clean = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  run = functools.partial(energy_pretraining.corrupt_and_restore, model, tiny_config, params,
                          clean, keys, train=False)
  default = run()
  learned = default.step_sizes
  assert learned.shape == (tiny_config.restore.num_steps,)
  np.testing.assert_array_equal(run(step_sizes=learned).trajectory, default.trajectory)
  longer = run(step_sizes=jnp.concatenate([learned, learned[-1:]]))
  assert longer.trajectory.shape[0] == learned.shape[0] + 1
  np.testing.assert_allclose(longer.trajectory[:-1], default.trajectory, atol=1e-6)
  assert not np.allclose(longer.trajectory[-1], longer.trajectory[-2])
  stopped = run(step_sizes=learned.at[0].set(0.))
  np.testing.assert_array_equal(stopped.trajectory[0], default.corrupted.images)


def test_unrolled_steps_equal_the_scan():
  efn = lambda w, x: jnp.sum(jnp.sin(w * x), axis=(1, 2, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  alphas = jnp.array([0.3, 0.2, 0.1])

  def final(w, unroll):
    traj, _ = energy.restore(efn, w, x0, alphas, jax.random.PRNGKey(1), unroll=unroll,
                             langevin_noise_scale=0.1)
    return jnp.sum(traj[-1] ** 2)
  np.testing.assert_allclose(final(1.5, True), final(1.5, False), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(final)(1.5, True), jax.grad(final)(1.5, False), rtol=1e-5)


def test_langevin_noise_has_the_langevin_variance():
  efn = lambda _, x: jnp.zeros(x.shape[0])  # No drift: only noise moves pixels.
  x0 = jnp.zeros((64, 16, 16, 3))
  alphas = jnp.array([0.5, 0.125])
  traj, _ = energy.restore(efn, {}, x0, alphas, jax.random.PRNGKey(0), langevin_noise_scale=0.3)
  expected_var = 2 * 0.3**2 * np.cumsum(alphas)
  np.testing.assert_allclose(np.var(traj, axis=(1, 2, 3, 4)), expected_var, rtol=0.05)


def test_interstep_noise_perturbs_the_next_steps_start_only():
  """With E = ½‖x‖² (∇ₓE = x): x_1 = (1 − α₁)·x_0 exactly, x_2 = (1 − α₂)·(x_1 + σ·ε·mask),
  σ = 0.3 × the RMS of each image's first step over the mask."""
  efn = lambda _, x: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 16, 16, 3))
  x0 = x0 * jnp.arange(1, 33).reshape(32, 1, 1, 1)  # Steps of different sizes per image.
  mask = jnp.zeros((32, 16, 16, 1)).at[:, :8].set(1.)
  alphas = jnp.array([0.5, 0.25])
  keys = jax.random.split(jax.random.PRNGKey(1), 32)
  traj, _ = energy.restore(efn, {}, x0, alphas, keys, update_mask=mask, interstep_noise_scale=0.3)
  plain, _ = energy.restore(efn, {}, x0, alphas, keys, update_mask=mask)
  np.testing.assert_allclose(traj[0], plain[0], rtol=1e-6)
  noise = np.asarray(traj[1] - (1 - alphas[1] * mask) * traj[0]) / (1 - 0.25)
  np.testing.assert_allclose(noise[:, 8:], 0., atol=1e-5)  # Outside the mask: no noise.
  step_rms = np.sqrt(np.mean(np.square(0.5 * x0[:, :8]), axis=(1, 2, 3)))
  relative = noise[:, :8] / step_rms[:, None, None, None]
  np.testing.assert_allclose(relative.std(axis=(1, 2, 3)), 0.3, rtol=0.15)
  np.testing.assert_allclose(relative.std(), 0.3, rtol=0.03)
  assert abs(relative.mean()) < 0.01


def test_step_sizes_are_positive_and_start_at_init():
  raw = energy.raw_step_size_init(0.05, 3)
  np.testing.assert_allclose(energy.step_sizes(raw), [0.05] * 3, rtol=1e-5)
  assert np.all(np.asarray(energy.step_sizes(jnp.array([-50., 0., 50.]))) > 0)


def test_loss_region_and_steps():
  clean = jnp.zeros((1, 4, 4, 3))
  traj = jnp.stack([jnp.ones_like(clean), 3 * jnp.ones_like(clean)])
  region = jnp.zeros((1, 4, 4, 1)).at[:, :2].set(1.)
  loss, per_step = energy.restoration_loss(traj.at[:, :, 2:].set(100.), clean, region)
  np.testing.assert_allclose(per_step, [1., 9.])  # Pixels outside the region do not count.
  np.testing.assert_allclose(loss, 5.)
  last, _ = energy.restoration_loss(traj, clean, region, steps="last")
  np.testing.assert_allclose(last, 9.)
  increasing, _ = energy.restoration_loss(traj, clean, region, steps="increasing")
  np.testing.assert_allclose(increasing, (1. + 2 * 9.) / 3, rtol=1e-6)
  huber, _ = energy.restoration_loss(traj, clean, region, loss_type="smooth_l1")
  np.testing.assert_allclose(huber, (0.5 + 2.5) / 2)


def test_own_patch_statistics_ignore_each_patch_mean_and_contrast():
  """'own' standardizes each side by itself: a restored patch that is the clean one up to
  its own shift and positive scale costs nothing; 'clean' charges for it."""
  k = jax.random.split(jax.random.PRNGKey(5), 3)
  clean = jax.random.normal(k[0], (2, 4, 4, 3))
  shift = jax.random.normal(k[1], (2, 2, 1, 2, 1, 1))  # One per 2×2 patch.
  scale = jnp.exp(jax.random.normal(k[2], shift.shape))
  patches = clean.reshape(2, 2, 2, 2, 2, 3)
  restored = (patches * scale + shift).reshape(clean.shape)[None]
  region = jnp.ones((2, 4, 4, 1))
  own, _ = energy.restoration_loss(restored, clean, region, patch_size=2,
                                   patch_stats="own", patch_eps=1e-10)
  np.testing.assert_allclose(own, 0., atol=1e-6)
  theirs, _ = energy.restoration_loss(restored, clean, region, patch_size=2)
  assert float(theirs) > 0.1
  # The floor keeps the gradient of a flat restored patch finite and bounded.
  grad = jax.grad(lambda r: energy.restoration_loss(
      r, clean, region, patch_size=2, patch_stats="own", patch_eps=0.05)[0])(
          jnp.zeros_like(restored))
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) < 10.


def test_plain_pixel_images_skip_the_patch_normalization():
  k = jax.random.split(jax.random.PRNGKey(7), 2)
  clean = 3 * jax.random.normal(k[0], (2, 4, 4, 3)) + 2  # Far from standardized patches.
  restored = jax.random.normal(k[1], (1, 2, 4, 4, 3))
  region = jnp.ones((2, 4, 4, 1))
  one = lambda i, **kw: energy.restoration_loss(restored[:, i:i + 1], clean[i:i + 1],
                                                region[i:i + 1], **kw)[0]
  own = dict(patch_size=2, patch_stats="own", patch_eps=0.05)
  mixed, _ = energy.restoration_loss(restored, clean, region,
                                     plain_images=jnp.array([True, False]), **own)
  np.testing.assert_allclose(mixed, (one(0) + one(1, **own)) / 2, rtol=1e-5)
  assert float(one(0)) > 2 * float(one(0, **own))  # The two losses differ.


def test_plain_pixel_images_are_those_of_the_listed_tasks(tiny_config):
  task = jnp.asarray([corruptions.TASKS.index(t) for t in ("mask", "sr", "color", "sort")]
                     + [-1], jnp.int32)  # -1: a 'compose' image.
  tiny_config.loss.plain_pixel_tasks = ("sr", "color")
  np.testing.assert_array_equal(energy_pretraining.plain_pixel_images(tiny_config, task),
                                [False, True, True, False, False])
  tiny_config.loss.plain_pixel_tasks = ()
  assert energy_pretraining.plain_pixel_images(tiny_config, task) is None


def test_match_patch_statistics_gives_each_patch_the_reference_mean_and_std():
  k = jax.random.split(jax.random.PRNGKey(6), 2)
  images, reference = (jax.random.normal(key, (2, 4, 4, 3)) for key in k)
  matched = patchify(energy.match_patch_statistics(images, reference, 2, eps=1e-10), 2)
  ref = patchify(reference, 2)
  np.testing.assert_allclose(matched.mean(-1), ref.mean(-1), atol=1e-5)
  np.testing.assert_allclose(matched.std(-1), ref.std(-1), rtol=1e-4)
  # Within each patch the structure is the image's own: correlation 1 with it.
  own = patchify(images, 2)
  centered = lambda x: x - x.mean(-1, keepdims=True)
  corr = (centered(matched) * centered(own)).sum(-1) / (
      jnp.linalg.norm(centered(matched), axis=-1) * jnp.linalg.norm(centered(own), axis=-1))
  np.testing.assert_allclose(corr, 1., rtol=1e-5)


def _zero_fill_model_and_images(config):
  """The tiny ViT with zero mask fill, its energy parameters and 4 random uint8 images."""
  config.corruption.mask.fill = "zeros"
  model = models.create_vit(config.model)
  params = energy_pretraining.init_params(model, config, jax.random.PRNGKey(0))
  images = jax.random.randint(jax.random.PRNGKey(1), (4, 16, 16, 3), 0, 256).astype(jnp.uint8)
  return model, params, images


def test_diagnostics_step_lengths_are_each_images_move(tiny_config):
  """Step lengths are the RMS moves of the descent's own pixels: with scale-free ('rms')
  steps every image moves by exactly its α; with plain steps the images' moves differ."""
  c = tiny_config
  model, params, images = _zero_fill_model_and_images(c)
  alphas = jnp.array([0.3, 0.1])
  diagnose = lambda: energy_pretraining.diagnostics(
      params, images, jax.random.PRNGKey(2), model=model, config=c, step_sizes=alphas)
  c.restore.step_normalization = "rms"
  d = diagnose()
  for key in ("step_length", "step_length_min", "step_length_max"):
    np.testing.assert_allclose(d[key], alphas, rtol=1e-4)
  c.restore.step_normalization = "none"
  d = diagnose()
  chex.assert_shape(d["step_length"], (2,))
  assert np.all(d["step_length_min"] < d["step_length"])
  assert np.all(d["step_length"] < d["step_length_max"])


def test_diagnostics_measure_own_stats_restorations_with_the_clean_patch_statistics(
    tiny_config):
  """With a loss blind to patch mean and contrast, restored masked patches are shown with
  the clean ones' (as MAE's), and the descent's own pixels are reported beside them."""
  c = tiny_config
  model, params, images = _zero_fill_model_and_images(c)
  d = energy_pretraining.diagnostics(params, images, jax.random.PRNGKey(2), model=model,
                                     config=c)
  p, eps = model.patch_size, c.loss.norm_pix_eps
  masked = patchify(d["region"], p)[..., 0] > 0  # [B, N]: whole patches.
  restored, clean = patchify(d["trajectory"][-1], p), patchify(d["clean"], p)
  np.testing.assert_allclose(restored.mean(-1)[masked], clean.mean(-1)[masked], atol=1e-4)
  assert np.all(np.asarray(restored.var(-1)[masked]) <= np.asarray(clean.var(-1)[masked]) + eps)
  np.testing.assert_array_equal(restored[~masked], clean[~masked])
  chex.assert_shape(d["unmatched_mse_restored"], (c.restore.num_steps,))
  assert float(jnp.abs(d["unmatched_mse_restored"] - d["mse_restored"]).max()) > 1e-3
  c.loss.plain_pixel_tasks = ("mask",)  # Compared in plain pixels, shown as restored.
  d = energy_pretraining.diagnostics(params, images, jax.random.PRNGKey(2), model=model, config=c)
  np.testing.assert_allclose(d["unmatched_mse_restored"], d["mse_restored"], rtol=1e-6)
  c.loss.plain_pixel_tasks = ()
  c.loss.norm_pix_stats = "clean"
  assert "unmatched_mse_restored" not in energy_pretraining.diagnostics(
      params, images, jax.random.PRNGKey(2), model=model, config=c)


def test_norm_pix_cells_standardize_the_loss_and_the_shown_restorations(tiny_config):
  """`loss.norm_pix_cell_size` standardizes cells smaller than the patch: the restored
  masked cells are shown with each clean cell's mean, and the loss changes; a cell of the
  patch size is the default."""
  c = tiny_config
  model, params, images = _zero_fill_model_and_images(c)
  clean = jax.random.normal(jax.random.PRNGKey(3), (4, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(4), 4)
  loss = lambda: float(energy_pretraining.loss(params, clean, keys, model=model, config=c)[0])
  default = loss()
  cell = model.patch_size // 2
  c.loss.norm_pix_cell_size = model.patch_size
  assert loss() == default
  with c.unlocked():
    del c.loss["norm_pix_cell_size"]  # A config recorded before the field existed.
  assert loss() == default
  c.loss.norm_pix_cell_size = cell
  assert abs(loss() - default) > 1e-4
  d = energy_pretraining.diagnostics(params, images, jax.random.PRNGKey(2), model=model,
                                     config=c)
  masked = patchify(d["region"], cell)[..., 0] > 0  # [B, N]: whole cells.
  restored, clean_cells = patchify(d["trajectory"][-1], cell), patchify(d["clean"], cell)
  np.testing.assert_allclose(restored.mean(-1)[masked], clean_cells.mean(-1)[masked],
                             atol=1e-4)


@pytest.mark.slow
def test_training_makes_restoration_beat_the_corrupted_input(tiny_config):
  """A few dozen steps on smooth images: restored masked pixels beat the noise fill."""
  c = tiny_config
  c.restore.num_steps = 1
  c.optimizer.warmup_steps = 5
  c.num_train_steps = 60
  c.corruption.mask.ratio = 0.5
  c.corruption.mask.fill = "noise"  # Zeros (the default) is closer to smooth images: 150+ steps.
  c.loss.norm_pix = False
  model = models.create_vit(c.model)
  from ebm_vision.run.optimizer import pretraining_optimizer
  tx, schedule = pretraining_optimizer(c)
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))
  diag = jax.jit(functools.partial(train_step.diagnostics, model=model, config=c))

  def smooth_images(key, n):  # Random low-frequency colour fields, uint8.
    coarse = jax.random.uniform(key, (n, 2, 2, 3), minval=40, maxval=215)
    return jnp.round(jax.image.resize(coarse, (n, 16, 16, 3), "linear")).astype(jnp.uint8)

  held_out = smooth_images(jax.random.PRNGKey(99), 32)

  def masked_mse(d, x):
    return float(((x - d["clean"])**2 * d["region"]).sum() / (d["region"].sum() * 3))

  before = diag(state["params"], held_out, jax.random.PRNGKey(5))
  losses = []
  for i in range(c.num_train_steps):
    state, m = step(state, {"image": smooth_images(jax.random.PRNGKey(i), c.batch_size)})
    losses.append(float(m["loss"]))
  after = diag(state["params"], held_out, jax.random.PRNGKey(5))
  corrupted = masked_mse(after, after["corrupted"])
  restored = masked_mse(after, after["trajectory"][-1])
  assert restored < 0.6 * corrupted
  assert restored < 0.7 * masked_mse(before, before["trajectory"][-1])
  assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_energy_ranking_loss_is_small_only_when_clean_is_lowest():
  clean = jnp.array([1., 1.])
  ordered = energy.energy_ranking_loss(clean, jnp.array([[9., 9.], [8., 8.]]))
  reversed_ = energy.energy_ranking_loss(clean, jnp.array([[-9., -9.], [-8., -8.]]))
  assert float(ordered) < 1e-3 and float(reversed_) > 8.


@pytest.mark.slow
def test_ranking_term_makes_the_clean_image_lowest_in_energy(tiny_config):
  """Without it nothing ranks the clean image; with it, clean ends up lowest."""
  c = tiny_config
  c.num_train_steps, c.batch_size, c.optimizer.warmup_steps = 150, 16, 10
  c.corruption.mask.ratio, c.loss.norm_pix = 0.5, False
  c.corruption.mask.fill = "noise"
  c.optimizer.learning_rate_per_256 = 0.05
  c.loss.energy_ranking_weight = 1.0
  model = models.create_vit(c.model)
  from ebm_vision.run.optimizer import pretraining_optimizer
  tx, schedule = pretraining_optimizer(c)
  state = train_step.init_state(model, tx, c, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(train_step.train_step, model=model, config=c, tx=tx,
                                   schedule=schedule))

  def smooth_images(key, n):
    coarse = jax.random.uniform(key, (n, 4, 4, 3), minval=20, maxval=235)
    return jnp.round(jax.image.resize(coarse, (n, 16, 16, 3), "linear")).astype(jnp.uint8)

  for i in range(c.num_train_steps):
    state, metrics = step(state, {"image": smooth_images(jax.random.PRNGKey(i), 16)})
  assert "energy_ranking" in metrics
  d = train_step.diagnostics(state["params"], smooth_images(
      jax.random.PRNGKey(999), 64), jax.random.PRNGKey(5), model=model, config=c)
  others = [float(d["energy_corrupted"]), *np.asarray(d["energy_restored"])]
  assert float(d["energy_clean"]) < min(others)
  assert float(d["mse_restored"][-1]) < 0.6 * float(d["mse_corrupted"])
