"""Stopping cleanly when the machine is taken away: checkpoint at the next step, then exit.

One process: SIGTERM (what SLURM, Kubernetes and spot-VM shutdowns send) sets a flag.
Several processes: JAX's coordination service catches SIGTERM (or a TPU maintenance
notice) on any host and picks a step at which every process stops together; Orbax
exposes it as `CheckpointManager.reached_preemption(step)`.
"""
from __future__ import annotations

import signal

import jax
import orbax.checkpoint as ocp
from absl import logging


class PreemptionWatch:
  """`stop_requested(step)` turns True at the step boundary after a preemption notice.

  Use as a context manager: the SIGTERM handler is installed (single process
  only) on entry and the previous one put back on exit.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager = manager
    self._signal = None
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _on_signal(self, signum, _):
    logging.warning("Received signal %d: checkpointing at the end of this step, then "
                    "exiting.", signum)
    self._signal = signum

  def stop_requested(self, step: int) -> bool:
    """Whether to checkpoint `step` and stop; the same answer on every process."""
    if jax.process_count() > 1:
      return self._manager.reached_preemption(step)
    return self._signal is not None
