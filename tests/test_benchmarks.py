"""The benchmark scripts run end to end on tiny settings and print their tables (no timing
is asserted)."""
import json
import os
import subprocess
import sys

import pytest

from subprocesses import REPO

pytestmark = pytest.mark.slow  # End-to-end runs.


def import_harness():
  """benchmarks/harness.py as a module (it defines the benchmarks' flags)."""
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import harness  # pylint: disable=import-outside-toplevel
  return harness


def run_script(name, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, os.path.join("benchmarks", name), *flags], cwd=REPO,
                        env=env, capture_output=True, text=True, check=False, timeout=600)


def test_step_throughput_table():
  """Energy rows only: the MAE step it also times is covered by tests/test_mae.py."""
  result = run_script("step_throughput.py", "--variant=Ti/8", "--width=64", "--depth=1",
                      "--image_size=32", "--batch_size=4", "--dtype=float32", "--steps=1",
                      "--repeats=2", "--methods=energy_k1,energy_k2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert any(line.split()[:1] == ["method"] for line in lines)
  rows = {line.split()[0]: line.split() for line in lines[-2:]}
  assert set(rows) == {"energy_k1", "energy_k2"}
  # TFLOP/step: two restoration steps count twice the restoration work of one.
  assert float(rows["energy_k2"][4]) > 1.5 * float(rows["energy_k1"][4]) > 0


def test_step_throughput_compile_only_reports_flops_against_mae():
  result = run_script("step_throughput.py", "--variant=Ti/8", "--width=64", "--depth=1",
                      "--image_size=32", "--batch_size=4", "--dtype=float32", "--notimed",
                      "--mae_decoder_width=32", "--mae_decoder_depth=1",
                      "--methods=energy_k1,mae")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[-2:]}
  assert rows["mae"][1:4] == ["n/a"] * 3  # Nothing was timed.
  assert rows["mae"][6] == "1.00"
  # The energy step differentiates through a full-image backward pass (several forward
  # passes' worth of FLOPs); MAE's encoder sees a quarter of the patches.
  assert float(rows["energy_k1"][5]) > 3
  assert float(rows["energy_k1"][6]) > 2


def test_step_memory_reports_each_config():
  result = run_script("step_memory.py", "--configs=demo", "--devices=2", "--batch_size=4",
                      "--mesh=1,2,1")
  assert result.returncode == 0, result.stderr[-3000:]
  row = result.stdout.splitlines()[-1].split()
  assert row[:4] == ["demo", "1M", "1×2×1", "2"]
  assert float(row[-1]) > float(row[-3]) > 0  # Peak above the train state.


TINY_MODEL_FLAGS = ("--image_size=16", "--patch_size=4", "--width=32", "--depth=1",
                    "--num_heads=2", "--finetune_splits=train[:50%]", "--finetune_steps=2",
                    "--finetune_batch_size=4")


@pytest.fixture(scope="module")
def ablation(tfds_dir, tmp_path_factory):
  """One variant and the random init, 2 pretraining steps, on the tests' data set."""
  out = tmp_path_factory.mktemp("ablation")
  result = run_script("ablation.py", f"--out={out}", "--steps=2", "--warmup_steps=1",
                      "--seeds=0", "--variant=random:", "--variant=k1:restore.num_steps=1",
                      f"--builder_dir={tfds_dir}", *TINY_MODEL_FLAGS, "--batch_size=8",
                      "--num_train_examples=16", "--num_eval_examples=8",
                      "--finetune_last_blocks=1")
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result


def test_ablation_reports_restoration_transfer_and_fine_tuning(ablation):
  out, result = ablation
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  assert [r["variant"] for r in rows] == ["random", "k1"]
  for row in rows:
    for key in ("knn", "linear_probe", "ft train[:50%]", "ft_last1 train[:50%]"):
      assert 0 <= row[key] <= 1, (row["variant"], key)
  assert "mse_restored_1" in rows[1] and "train_step_size_1" in rows[1]
  summary = result.stdout.strip().splitlines()
  assert summary[-4].startswith("| variant | seeds | knn | linear_probe | ft train[:50%] |")


def test_finetune_backbones_repeats_the_ablation_fine_tuning(ablation, tfds_dir, tmp_path):
  """A finished workdir (or the random init) fine-tuned again with the same recipe and seed
  gives the ablation's top-1."""
  out, _ = ablation
  result = run_script("finetune_backbones.py", f"--out={tmp_path}", "--backbone=random:0:",
                      f"--backbone=k1:0:{out / 'k1_s0'}", f"--builder_dir={tfds_dir}",
                      *TINY_MODEL_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  ablation_rows = {r["variant"]: r for r in map(
      json.loads, (out / "results.jsonl").read_text().splitlines())}
  rows = json.loads((tmp_path / "results.json").read_text())
  assert [(r["backbone"], r["seed"]) for r in rows] == [("random", 0), ("k1", 0)]
  for row in rows:
    assert row["ft train[:50%]"] == ablation_rows[row["backbone"]]["ft train[:50%]"]
  assert "| k1 | 1 | " in result.stdout


def test_finetune_backbones_runs_the_last_block_row_alone(ablation, tfds_dir, tmp_path):
  """--nofinetune_whole fine-tunes the last block + head only, as the ablation's extra row."""
  out, _ = ablation
  result = run_script("finetune_backbones.py", f"--out={tmp_path}",
                      f"--backbone=k1:0:{out / 'k1_s0'}", f"--builder_dir={tfds_dir}",
                      *TINY_MODEL_FLAGS, "--finetune_last_blocks=1", "--nofinetune_whole")
  assert result.returncode == 0, result.stderr[-3000:]
  ablation_row = json.loads((out / "results.jsonl").read_text().splitlines()[1])
  (row,) = json.loads((tmp_path / "results.json").read_text())
  assert "ft train[:50%]" not in row
  assert row["ft_last1 train[:50%]"] == ablation_row["ft_last1 train[:50%]"]


def test_backbone_diagnostics_reports_every_block_of_a_run_and_a_random_init(ablation):
  out, _ = ablation
  result = run_script("backbone_diagnostics.py", f"--workdir={out / 'k1_s0'}",
                      "--workdir=random", "--num_images=8", "--num_train=16", "--num_eval=8")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  (run_line,) = [line for line in lines if line.startswith(f"{out.name}/k1_s0: ")]
  assert "param_norm" in run_line and "step_sizes [" in run_line  # restore.num_steps=1.
  rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")][1:]
  assert [r[:2] for r in rows] == [[f"{out.name}/k1_s0", "1"], ["random", "1"]]  # A block each.
  for row in rows:
    rms, cosine, rank = map(float, row[2:5])
    assert rms > 0 and -1 <= cosine <= 1 and 1 <= rank <= 32  # Width 32.
    assert 0 <= float(row[5].rstrip("%")) <= 100
  # A few steps from the run's own init move it by far less than another init is away
  # (two independent inits of the same scale: ~√2).
  assert 0 < float(rows[0][6]) < 0.5 and rows[1][6] == "–"
  assert 0 < float(run_line.split("embedding_moved ")[1].split(",")[0]) < 0.5


def test_nofinetune_whole_without_last_blocks_fails_at_start_up(tmp_path):
  result = run_script("finetune_backbones.py", f"--out={tmp_path}", "--backbone=none:0:",
                      "--nofinetune_whole")
  assert result.returncode != 0
  assert "--nofinetune_whole needs --finetune_last_blocks" in result.stderr
  assert not (tmp_path / "results.json").exists()


def test_overrides_keep_commas_inside_brackets():
  harness = import_harness()
  assert harness.parse_overrides("a.b=1,c=x,d=(2, 3),e=['u', 'v'],f=0.5,") == {
      "a.b": 1, "c": "x", "d": (2, 3), "e": ["u", "v"], "f": 0.5}
  assert harness.parse_overrides("") == {}


def test_finetune_recipe_flags_reach_the_config():
  """The fine-tuning recipe is the --finetune_* flags, whatever the config file's defaults."""
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  harness = import_harness()
  if not harness.FLAGS.is_parsed():
    harness.FLAGS.mark_as_parsed()  # Defaults; other tests may define required flags.
  with flagsaver.flagsaver(finetune_layer_decay=1.0, finetune_learning_rate_per_256=2e-3,
                           finetune_steps=400, finetune_mixup_alpha=0.8,
                           finetune_head_only_fraction=0.25):
    config = harness.finetune_config(None, "train[:20%]", seed=3, last_blocks=1)
  assert config.finetune.layer_decay == 1.0
  assert config.optimizer.learning_rate_per_256 == 2e-3
  assert (config.num_train_steps, config.optimizer.warmup_steps) == (400, 20)
  assert config.finetune.mixup_alpha == 0.8 and config.finetune.train_last_blocks == 1
  assert config.finetune.head_only_fraction == 0.25
  assert (config.seed, config.data.train_split, config.pretrained) == (3, "train[:20%]", None)


def test_descent_probe_scales_the_first_step_only(pretrained_workdir):
  """One row per first-step scale, the same corruptions in each, the learned sizes with the
  first scaled and the last repeated for the extra steps."""
  result = run_script("descent_probe.py", f"--workdir={pretrained_workdir}",
                      "--first_step_scales=0,1", "--extra_steps=1", "--images=eval_split",
                      "--num_images=4")
  assert result.returncode == 0, result.stderr[-3000:]
  zero, one = [line.strip("| ").split(" | ") for line in result.stdout.splitlines()[-2:]]
  assert len(one) == 4 + 3 + 1  # Run, scale, sizes, corrupted, 2 learned + 1 extra, move.
  assert (zero[1], one[1]) == ("0", "1")
  sizes = one[2].split()
  assert float(sizes[0]) > 0 and sizes[2] == sizes[1]
  assert zero[2].split() == ["0"] + sizes[1:]
  assert zero[3] == one[3]  # The same corrupted images.
  assert zero[4:] != one[4:]
  first_move = lambda row: float(row[-1].split()[0])  # Batch mean of step 1's move.
  assert first_move(zero) < 1e-5 < first_move(one)
