"""The launch scripts: usage, clear failures, and the commands they would run (dry run)."""
import os
import shutil
import subprocess

import pytest

from subprocesses import REPO

BASH = shutil.which("bash")


def launch(script, *args, dry_run=True, path=None, **env_vars):
  env = dict(os.environ, PATH=path if path is not None else os.environ["PATH"], **env_vars)
  env.pop("DRY_RUN", None)
  if dry_run:
    env["DRY_RUN"] = "1"
  for name in [n for n in env if n.startswith("SLURM_")]:
    del env[name]
  return subprocess.run([BASH, os.path.join(REPO, "launch", script), *args], env=env,
                        capture_output=True, text=True, check=False, cwd=REPO)


TPU = ("--name=ebm-l", "--zone=us-central2-b")


def test_tpu_pod_prints_each_stage():
  create = launch("tpu_pod.sh", "create", *TPU, "--accelerator-type=v4-64", "--spot")
  assert create.returncode == 0, create.stderr
  assert create.stdout.strip() == (
      "gcloud compute tpus tpu-vm create ebm-l --zone=us-central2-b --accelerator-type=v4-64 "
      "--version=tpu-ubuntu2204-base --spot")
  copy = launch("tpu_pod.sh", "copy", *TPU).stdout
  assert "ls-files -co --exclude-standard" in copy and "scp" in copy and "--worker=all" in copy
  install = launch("tpu_pod.sh", "install", *TPU).stdout
  assert "pip install -q -r requirements.txt" in install and "jax[tpu]==" in install
  run = launch("tpu_pod.sh", "run", *TPU, "--config=configs/vit_l_mask.py", "--bucket=bkt",
               "--", "--config.batch_size=2048").stdout
  assert "--worker=all" in run
  for part in ("main.py --config=configs/vit_l_mask.py", "--workdir=gs://bkt/ebm_vision/ebm-l",
               "--config.data.data_dir=gs://bkt/tensorflow_datasets", "--distributed=on",
               "--config.batch_size=2048"):
    assert part in run
  assert "--worker=3" in launch("tpu_pod.sh", "logs", *TPU, "--worker=3").stdout
  assert launch("tpu_pod.sh", "delete", *TPU).stdout.strip() == (
      "gcloud compute tpus tpu-vm delete ebm-l --zone=us-central2-b --quiet")
  help_text = launch("tpu_pod.sh", "help")
  assert help_text.returncode == 0 and "usage: launch/tpu_pod.sh COMMAND" in help_text.stdout


@pytest.mark.parametrize("args, message", [
    (("create", "--zone=z"), "create needs --name=NAME"),
    (("create", "--name=n", "--zone=z"), "create needs --accelerator-type=TYPE"),
    (("run", "--name=n", "--zone=z", "--config=c.py"), "run needs --bucket=BUCKET"),
    (("start", "--name=n", "--zone=z"), "unknown command 'start'"),
    (("create", "--name=n", "--zone=z", "--acelerator-type=v4-8"), "unknown argument"),
])
def test_tpu_pod_names_what_is_missing(args, message):
  result = launch("tpu_pod.sh", *args)
  assert result.returncode == 2 and message in result.stderr, result.stderr


def test_tpu_pod_needs_gcloud(tmp_path):
  result = launch("tpu_pod.sh", "create", *TPU, "--accelerator-type=v4-8", dry_run=False,
                  path=str(tmp_path))
  assert result.returncode == 2 and "gcloud not found" in result.stderr, result.stderr


def test_gpu_slurm_one_process_per_node_or_per_gpu(tmp_path):
  per_node = launch("gpu_slurm.sbatch", "configs/vit_l_mask.py", "/runs/l", "--config.seed=1")
  assert per_node.returncode == 0, per_node.stderr
  assert per_node.stdout.strip() == (
      "srun --kill-on-bad-exit=1 python main.py --config=configs/vit_l_mask.py "
      "--workdir=/runs/l --distributed=auto --local_device_ids=0,1,2,3,4,5,6,7 --config.seed=1")
  per_gpu = launch("gpu_slurm.sbatch", "configs/vit_l_mask.py", "/runs/l",
                   PROCESS_PER="gpu").stdout
  assert "--local_device_ids" not in per_gpu and "--distributed=auto" in per_gpu
  no_srun = launch("gpu_slurm.sbatch", "configs/vit_l_mask.py", "/runs/l", dry_run=False,
                   path=str(tmp_path))
  assert no_srun.returncode == 2 and "srun not found" in no_srun.stderr
  usage = launch("gpu_slurm.sbatch")
  assert usage.returncode == 2 and "usage: sbatch" in usage.stderr


def test_local_launch():
  result = launch("local.sh", "configs/demo.py", "/tmp/demo", "--config.seed=3")
  assert result.stdout.strip() == (
      "python main.py --config=configs/demo.py --workdir=/tmp/demo --config.seed=3")
  missing = launch("local.sh", "configs/nope.py", "/tmp/x")
  assert missing.returncode == 2 and "config file 'configs/nope.py' not found" in missing.stderr
