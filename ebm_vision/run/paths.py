"""Run folders on local disk or in a bucket (gs://, s3://), through one path type.

A TPU pod writes its workdir to a bucket and transfer jobs read checkpoints from
there, so no code here touches a workdir with `os.path`/`open`: `os.path.abspath`
turns `gs://b/run` into a local folder named `gs:`.
"""
from __future__ import annotations

import os
import uuid

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an `epath.Path`: a URI (gs://…) as it is, a local path made absolute."""
  path = os.fspath(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def repo_relative(path: str) -> str:
  """`path` with '~' expanded; a relative path is taken relative to the repository root
  (where configs name their data folders), not to the current directory."""
  path = os.path.expanduser(path)
  if "://" in path or os.path.isabs(path):
    return path
  return os.path.normpath(os.path.join(REPO_ROOT, path))


def ensure_writable(workdir: str | os.PathLike) -> epath.Path:
  """Creates `workdir` if needed and writes and removes a probe file in it.

  The probe's name is unique, so that every process of a multi-host run can probe
  the same folder at once. Raises OSError (locally) or the bucket backend's error
  (e.g. tf.errors.PermissionDeniedError) when the folder cannot be written.
  """
  workdir = as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  probe = workdir / f".write_test.{uuid.uuid4().hex}"
  probe.write_text("ok")
  probe.unlink()
  return workdir


def run_label(workdir: str) -> str:
  """A workdir's name in result tables: its last two path components (the benchmarks'
  <out>/<run>, so that runs of the same name in different sweeps stay apart)."""
  return "/".join(os.path.normpath(workdir).split(os.sep)[-2:])
