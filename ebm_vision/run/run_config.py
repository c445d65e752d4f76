"""The config a workdir records (config.json), and what a resumed run may change in it.

A run writes its config once its state exists (fresh or resumed), atomically, so a run
that fails at start-up never replaces the record. On resume, fields that the
checkpoints depend on (the parameters' shapes, the objective, the optimizer's
structure) must match the record; fields in `SAFE_TO_CHANGE` may differ and are listed.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional

import ml_collections
from absl import logging

from ebm_vision.run import paths
from ebm_vision.run.errors import ConfigMismatch, RunError

CONFIG_FILE = "config.json"  # Written into the workdir by every training run.

# Fields (or whole sections) a resumed run may change: schedules and intervals, logging and
# evaluation, where data comes from, the mesh, memory/speed knobs that give the same values.
SAFE_TO_CHANGE = (
    "num_train_steps", "log_every_steps", "image_every_steps", "checkpoint_every_steps",
    "max_checkpoints_to_keep", "async_checkpointing", "time_budget_seconds", "stop_after_steps",
    "batch_size", "eval_tasks", "num_grid_images", "knn_monitor", "viewer", "mesh",
    "resume_override",
    "data.data_dir", "data.builder_dir", "data.shuffle_buffer", "data.prefetch_batches",
    "data.checkpoint_iterator", "grad_accum_steps", "optimizer.learning_rate_per_256",
    "optimizer.warmup_steps",
    "optimizer.weight_decay", "optimizer.b1", "optimizer.b2", "restore.remat",
    "restore.second_order", "restore.unroll_steps", "model.remat_blocks",
    "model.compute_dtype", "finetune.eval_every_steps", "frozen")


def save(workdir, config) -> None:
  """Writes `config` to <workdir>/config.json atomically (a temporary file, then a rename)."""
  path = paths.as_path(workdir) / CONFIG_FILE
  tmp = path.parent / f".{CONFIG_FILE}.{uuid.uuid4().hex}.tmp"
  tmp.write_text(config.to_json_best_effort(indent=1))
  tmp.replace(path)  # Atomic on a local disk; a copy then a delete in a bucket.


def load(workdir) -> ml_collections.ConfigDict:
  """The config the run in `workdir` recorded; one-line errors when missing or unreadable."""
  recorded = read(workdir)
  if recorded is None:
    raise FileNotFoundError(f"{paths.as_path(workdir) / CONFIG_FILE} is missing: not a "
                            "workdir of an ebm-vision run")
  return ml_collections.ConfigDict(recorded)


def read(workdir) -> Optional[dict]:
  """The recorded config as a dict, or None when the workdir has none."""
  path = paths.as_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunError(f"{path} is corrupted ({type(e).__name__}: {e}); restore it from a backup, "
                   "or delete it to record the current config") from None


def _flatten(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}{key}."))
  return {k.rstrip("."): v for k, v in out.items()}


def differences(recorded: dict, config) -> list[tuple[str, object, object]]:
  """(field, recorded value, new value) for every field whose value changed. Fields the
  record lacks (added to the code later) are not changes: their defaults apply."""
  old = _flatten(recorded)
  new = _flatten(json.loads(config.to_json_best_effort()))
  return [(k, old[k], v) for k, v in sorted(new.items()) if k in old and old[k] != v]


def is_safe(field: str) -> bool:
  return any(field == s or field.startswith(s + ".") for s in SAFE_TO_CHANGE)


def check_resume(workdir, config) -> None:
  """Raises ConfigMismatch listing the changed fields that the checkpoints depend on
  (unless `config.resume_override`); logs the safe changes."""
  recorded = read(workdir)
  if recorded is None:
    return
  changes = differences(recorded, config)
  describe = lambda fields: ", ".join(f"{k}: {a!r} → {b!r}" for k, a, b in fields)
  safe = [c for c in changes if is_safe(c[0])]
  unsafe = [c for c in changes if not is_safe(c[0])]
  if safe:
    logging.info("Resuming with changed fields: %s", describe(safe))
  if unsafe and not config.get("resume_override", False):
    raise ConfigMismatch(
        f"resuming {paths.as_path(workdir)} with a config that changes what its checkpoints "
        f"depend on: {describe(unsafe)}. Use a fresh --workdir, or pass "
        "--config.resume_override=True to resume anyway")
  if unsafe:
    logging.warning("resume_override: resuming despite changed fields %s", describe(unsafe))
