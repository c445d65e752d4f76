"""Where arrays live on the mesh: the one place that decides sharding.

Parameters get Flax logical axis names from their path (`PARAM_AXES`, first match
wins, others are replicated); `LOGICAL_AXIS_RULES` maps logical names to the mesh
axes of `ebm_vision.mesh`. With the defaults, weight matrices are split along the
model width over `fsdp` (ZeRO-3: XLA gathers each layer's weights when it is used and
reduce-scatters its gradient) and along the MLP and head dimensions over `tensor`
(Megatron-style). Optimizer moments follow their parameters. A dimension that the
mesh axes do not divide stays whole.
"""
from __future__ import annotations

import contextlib
import math
import re

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ebm_vision.parallel import mesh as mesh_lib

# Regex on a parameter's path 'a/b/kernel' -> logical names of its dimensions.
PARAM_AXES = (
    (r"(^|/)embedding/kernel$", (None, None, None, "embed")),  # [p, p, 3, D]
    (r"(^|/)(pos_embedding|cls)$", (None, None, "embed")),  # [1, N, D]
    (r"/(query|key|value)/kernel$", ("embed", "heads", "kv")),  # [D, H, D/H]
    (r"/(query|key|value)/bias$", ("heads", "kv")),
    (r"/out/kernel$", ("heads", "kv", "embed")),  # [H, D/H, D]
    (r"/Dense_0/kernel$", ("embed", "mlp")),  # MLP in: [D, M]
    (r"/Dense_0/bias$", ("mlp",)),
    (r"/Dense_1/kernel$", ("mlp", "embed")),  # MLP out: [M, D]
    (r"(^|/)head/kernel$", ("embed", "classes")),  # [D, classes]
)

# Logical axis -> mesh axes, in Flax's rule format (first applicable rule wins).
LOGICAL_AXIS_RULES = (
    ("batch", mesh_lib.BATCH_AXES),  # Activations: examples split over data×fsdp.
    ("embed", mesh_lib.FSDP),  # Weights split along the width (FSDP / ZeRO-3).
    ("mlp", mesh_lib.TENSOR),  # Tensor parallelism of the MLP...
    ("heads", mesh_lib.TENSOR),  # ...and of attention, by heads.
    ("kv", None),
    ("classes", None),
)


def path_name(path) -> str:
  """'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel' for a tree path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def logical_axes(path, leaf) -> tuple:
  """Logical names of a parameter's dimensions (None: not sharded)."""
  name = path_name(path)
  for pattern, names in PARAM_AXES:
    if re.search(pattern, name) and len(names) == leaf.ndim:
      return names
  return (None,) * leaf.ndim


def _fit_to_shape(spec: P, shape, mesh) -> P:
  """Drops the sharding of dimensions that their mesh axes do not divide."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[a] for a in names)
    fitted.append(axes if size > 1 and dim % size == 0 else None)
  return P(*fitted)


def param_shardings(params, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """NamedShardings of a tree of parameters (arrays or ShapeDtypeStructs)."""
  def sharding(path, leaf):
    spec = nn.logical_to_mesh_axes(logical_axes(path, leaf), rules)
    return NamedSharding(mesh, _fit_to_shape(spec, leaf.shape, mesh))
  return jax.tree_util.tree_map_with_path(sharding, params)


def _dict_keys(path) -> tuple:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def state_shardings(abstract_state: dict, mesh: Mesh):
  """Shardings of a train state {'params', 'opt_state', ...}: parameters (and their EMA,
  'ema_params') by the rules, their optimizer moments alike, everything else (step, rng,
  counts) replicated.

  A moment is found by its path: the parameter's names end its path in the optimizer
  state (inside whatever chains, masks and multi-transforms the optimizer nests them).
  """
  replicated = mesh_lib.replicated(mesh)
  params = param_shardings(abstract_state["params"], mesh)
  by_names = {_dict_keys(path): (s, leaf.shape) for (path, s), leaf in zip(
      jax.tree_util.tree_flatten_with_path(params)[0],
      jax.tree.leaves(abstract_state["params"]))}

  def moment_sharding(path, leaf):
    names = _dict_keys(path)
    for start in range(len(names)):
      sharding, shape = by_names.get(names[start:], (None, None))
      if sharding is not None and shape == leaf.shape:
        return sharding
    return replicated

  out = jax.tree.map(lambda _: replicated, abstract_state)
  out.update(params=params, opt_state=jax.tree_util.tree_map_with_path(
      moment_sharding, abstract_state["opt_state"]))
  if "ema_params" in abstract_state:
    out["ema_params"] = params
  return out


@contextlib.contextmanager
def activation_sharding(mesh: Mesh):
  """Context in which the model's activation constraints (`constrain`)
  map to `mesh`; jitted functions must be first called (traced) inside it."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield


def jit(fn, mesh: Mesh, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` whose calls and `.lower(...)` (and so its tracing)
  happen inside `activation_sharding(mesh)`."""
  jitted = jax.jit(fn, **jit_kwargs)

  def call(*args):
    with activation_sharding(mesh):
      return jitted(*args)

  def lower(*args):
    with activation_sharding(mesh):
      return jitted.lower(*args)
  call.lower = lower
  return call


def constrain(x: jax.Array, names: tuple) -> jax.Array:
  """Sharding constraint of an activation by logical `names`, like
  `nn.with_logical_constraint`, but a dimension the mesh does not divide (a small
  eval batch) stays whole. A no-op outside `activation_sharding`."""
  mesh, rules = jax.sharding.get_abstract_mesh(), nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  spec = _fit_to_shape(nn.logical_to_mesh_axes(names, rules), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)
