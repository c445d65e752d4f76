"""Errors a user acts on: main.py prints the message as one line, without a traceback."""


class RunError(Exception):
  """A run cannot go on; the message says why and what to do."""


class WorkdirInUse(RunError):
  """Another live run holds the workdir's lock."""


class ConfigMismatch(RunError):
  """A resumed run's config changes fields that the workdir's checkpoints depend on."""


class CheckpointError(RunError):
  """A checkpoint could not be written or does not fit the model."""


class DataError(RunError):
  """The input data cannot be read."""


class Preempted(Exception):
  """The run saved a checkpoint at a preemption notice and must exit now (not an error)."""
