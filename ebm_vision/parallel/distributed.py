"""Multi-process start-up: one JAX process per host (TPU pods) or per node/GPU (SLURM, MPI).

Call `initialize` before anything touches a JAX device. Afterwards `jax.devices()`
lists the devices of every process, each process feeds its own part of the global
batch, and `jax.process_index() == 0` writes logs and images.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
from absl import logging

MODES = ("auto", "on", "off")


def _count(variable: str) -> int:
  """An integer count from the environment, 1 if unset."""
  try:
    return int(os.environ.get(variable, "1"))
  except ValueError:
    return 1


def detect_cluster() -> Optional[str]:
  """The multi-process launcher this process runs under, or None for a single process.

  'slurm' (srun with more than one task), 'open_mpi' (mpirun -n > 1), or 'tpu_pod'
  (a TPU VM slice with several workers). `jax.distributed.initialize()` reads the
  coordinator address, process count and index from the same environment.
  """
  if _count("SLURM_NTASKS") > 1 and "SLURM_PROCID" in os.environ:
    return "slurm"
  if _count("OMPI_COMM_WORLD_SIZE") > 1:
    return "open_mpi"
  workers = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES")
  if workers and len(workers.split(",")) > 1:
    return "tpu_pod"
  return None


def initialize(mode: str = "auto", coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               local_device_ids: Optional[Sequence[int | str]] = None,
               timeout_seconds: int = 300) -> None:
  """Joins this process to the others, as `mode` says.

  mode 'off': a single process. 'on': always call `jax.distributed.initialize`
  (on TPU VMs it finds the other workers through the metadata server).
  'auto': only when a coordinator address is given or `detect_cluster()` finds a
  launcher. With `coordinator_address` ('host:port' of process 0), `num_processes`
  and `process_id` must be given too. `local_device_ids`: the accelerators this
  process drives (default: JAX's choice, one GPU per SLURM task).
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r}: must be one of {list(MODES)}")
  if mode == "off":
    return
  if local_device_ids is not None:
    try:
      local_device_ids = [int(i) for i in local_device_ids]
    except ValueError:
      raise ValueError(f"--local_device_ids={','.join(map(str, local_device_ids))}: must be "
                       "integers, e.g. 0,1,2,3") from None
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_seconds)
    source = f"coordinator {coordinator_address}"
  elif mode == "on" or detect_cluster():
    jax.distributed.initialize(local_device_ids=local_device_ids,
                               initialization_timeout=timeout_seconds)
    source = detect_cluster() or "auto-detected cluster"
  else:
    return
  logging.info("Process %d of %d (%s): %d local devices, %d in all", jax.process_index(),
               jax.process_count(), source, jax.local_device_count(), jax.device_count())
