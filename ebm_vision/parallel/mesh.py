"""Device mesh with `data`, `fsdp` and `tensor` axes, and the shardings of batches.

`jax.jit` over this mesh shards the batch over data×fsdp and the parameters as
`ebm_vision.partitioning` says (no pmap). The same code serves 1 device, 8 simulated CPU
devices, a TPU pod slice and multi-node GPUs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
AXES = (DATA, FSDP, TENSOR)
BATCH_AXES = (DATA, FSDP)  # The batch dimension is split over both.


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor) from `config.mesh`; one of them may be -1 ("the rest").

  Raises ValueError naming the field when the sizes cannot cover `num_devices`.
  """
  sizes = [int(mesh_config.get(axis, 1)) for axis in AXES]
  for axis, size in zip(AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh.{axis}={size}: must be ≥ 1, or -1 for the rest of the "
                       "devices")
  fields = ", ".join(f"config.mesh.{a}={s}" for a, s in zip(AXES, sizes))
  if sizes.count(-1) > 1:
    raise ValueError(f"{fields}: at most one axis may be -1 (the rest of the devices)")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{fields}: {known} does not divide the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"{fields}: the product must equal the {num_devices} devices "
                     "(or set one axis to -1)")
  return tuple(sizes)


def create_mesh(mesh_config, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """The (data, fsdp, tensor) mesh over all (or the given) devices.

  Devices are laid out by `jax.make_mesh` (topology-aware on TPUs), with each
  process's devices contiguous along the batch axes. Axis types are Auto, so
  XLA inserts the collectives of FSDP-sharded matrix products.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """Number of pieces the batch is split into."""
  return mesh.shape[DATA] * mesh.shape[FSDP]


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from each process's local numpy batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}
