"""main.py as a user meets it: one-line errors (no traceback, printed once) and the
summary line a pretraining run ends with."""
import os
import re
import subprocess
import sys

import pytest

from conftest import write_tfds_dataset
from subprocesses import REPO

pytestmark = pytest.mark.slow  # Each test starts main.py.


def main(*flags, config="tests/tiny_config.py"):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", EBM_DEBUG="")
  return subprocess.run([sys.executable, "main.py", f"--config={config}", *flags], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def one_line_error(result) -> str:
  """The error line of a failed run, checked to be its only mention and traceback-free."""
  assert result.returncode == 1, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("ebm-vision: ")
  assert "Traceback" not in result.stderr
  assert result.stderr.count(last[len("ebm-vision: "):]) == 1  # Printed once.
  return last


def test_missing_config_file(tmp_path):
  last = one_line_error(main(f"--workdir={tmp_path}", config="configs/nope.py"))
  assert last.startswith("ebm-vision: --config=configs/nope.py: no such file")


def test_pretraining_ends_with_a_summary_and_errors_on_its_workdir_are_one_line(tmp_path):
  workdir = tmp_path / "run"
  result = main(f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.fullmatch(
      r"ebm-vision: 4 steps in \d+ min \d+ s; held-out mask MSE \d+\.\d+ \(corrupted\) → "
      rf"\d+\.\d+ \(restored\); restoration grids in {workdir}/restorations",
      result.stdout.strip().splitlines()[-1])
  assert "ETA" not in result.stderr  # 4 steps: no estimate made from the compiling step.

  # A checkpoint whose shapes do not fit the model.
  last = one_line_error(main(f"--workdir={workdir}", "--mode=restore",
                             "--config.model.width=96", "--config.viewer.source=dead_leaves"))
  assert "parameter model/embedding/bias has shape (64,) in the checkpoint" in last

  # --mode=restore on an empty workdir: one line, and nothing created there.
  empty = tmp_path / "empty"
  empty.mkdir()
  last = one_line_error(main(f"--workdir={empty}", "--mode=restore"))
  assert "holds no checkpoint" in last and not os.listdir(empty)

  # A corrupted config.json in the workdir that a run resumes.
  (workdir / "config.json").write_text("{not json")
  last = one_line_error(main(f"--workdir={workdir}", "--config.num_train_steps=6"))
  assert last.startswith(f"ebm-vision: {workdir}/config.json is corrupted")


def test_a_truncated_shard_is_named_with_its_record(tmp_path):
  builder_dir = write_tfds_dataset(tmp_path / "tfds", num_train=64)
  shard = next(os.path.join(builder_dir, f) for f in sorted(os.listdir(builder_dir))
               if "train.tfrecord" in f)
  with open(shard, "rb") as f:
    data = f.read()
  with open(shard, "wb") as f:
    f.write(data[:len(data) // 2])
  last = one_line_error(main(f"--workdir={tmp_path / 'run'}", "--config.data.source=tfds",
                             f"--config.data.builder_dir={builder_dir}"))
  assert re.match(rf"ebm-vision: {re.escape(shard)}: (record \d+ \(byte \d+\) is truncated|"
                  r"holds \d+ complete records where the data set says 64 \(truncated at "
                  r"byte \d+\))\. The prepared data set in .* is damaged: copy it again, or "
                  "rebuild it", last)
