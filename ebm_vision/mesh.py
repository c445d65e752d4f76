"""Device mesh and shardings (jax.jit over a Mesh; no pmap)."""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def create_mesh(mesh_config, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over all (or the given) devices with a 'data' axis."""
  devices = list(jax.devices() if devices is None else devices)
  size = len(devices) if mesh_config.data == -1 else mesh_config.data
  if size != len(devices):
    raise ValueError(f"config.mesh.data={mesh_config.data}: must be -1 or the number of "
                     f"devices ({len(devices)})")
  return Mesh(np.asarray(devices).reshape(size), (DATA,),
              axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis."""
  return NamedSharding(mesh, P(DATA))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from each process's local numpy batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}
