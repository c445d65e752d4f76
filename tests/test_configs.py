"""Every config in configs/ loads and validates; task arguments select the pretext task."""
import glob
import os
import subprocess
import sys

import pytest
from ml_collections import config_flags

from configs import common
from ebm_vision.run import config_validation
from subprocesses import REPO

CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "common.py"))


def load(path, arg=None):
  module = config_flags.config_flags._LoadConfigModule("config", path)  # pylint: disable=protected-access
  return module.get_config() if arg is None else module.get_config(arg)


def validate(config):
  if config.mode == "pretrain":
    config_validation.validate_pretraining(config, num_devices=8)
  else:
    config_validation.validate_transfer(config, num_devices=8)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_is_valid(path):
  validate(load(path))


@pytest.mark.parametrize("name", ["vit_b", "tiny_imagenet"])
@pytest.mark.parametrize("task", common.TASKS)
def test_a_task_argument_selects_the_pretext_task(name, task):
  config = load(os.path.join(REPO, "configs", f"{name}.py"), f"task={task}")
  validate(config)
  assert config.corruption.name == task


def test_the_documented_vit_b_mask_config_is_vit_b_with_masking():
  old = load(os.path.join(REPO, "configs", "vit_b_mask.py"))
  assert old.to_dict() == load(os.path.join(REPO, "configs", "vit_b.py"), "task=mask").to_dict()
  assert old.corruption.name == "mask" and old.num_epochs == 100 and old.num_train_steps is None


@pytest.mark.parametrize("arg, message", [
    ("task=jigsaw", "task='jigsaw': must be one of ['mask', 'sort', 'sr', 'denoise', 'color', 'mix']"),
    ("size=L", "expected key=value with key in ['task']"),
    ("sort", "expected key=value with key in ['task']")])
def test_a_bad_config_argument_names_the_allowed_values(arg, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
    common.parse_arg(arg, task="mask")


def test_main_accepts_a_config_argument(tmp_path):
  """main.py parses `file.py:arg` (here a bad one, which stops before any work)."""
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/tiny_imagenet.py:task=jigsaw",
       f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "ebm-vision: flag --config=configs/tiny_imagenet.py:task=jigsaw: ValueError: config "
      "argument task='jigsaw': must be one of ['mask', 'sort', 'sr', 'denoise', 'color', 'mix']"]


def test_epochs_become_steps_for_the_split_and_batch(tfds_dir):
  from ebm_vision.run import loop  # pylint: disable=g-import-not-at-top
  c = common.get_pretraining_config()
  c.data.builder_dir, c.batch_size = tfds_dir, 8  # 24 training images: 3 steps an epoch.
  c.num_epochs, c.optimizer.warmup_epochs = 2., 1.
  resolved = loop.schedule_in_steps(c)
  assert (resolved.num_train_steps, resolved.optimizer.warmup_steps) == (6, 3)
  c.batch_size = 4  # A smaller batch trains as many epochs: more steps.
  assert loop.schedule_in_steps(c).num_train_steps == 12
  c.num_train_steps = 5  # Both given: one line saying so.
  with pytest.raises(ValueError, match=r"config.num_epochs=2.0, config.num_train_steps=5: set "
                                       "one of them and the other to None"):
    loop.schedule_in_steps(c)


def test_the_demo_measures_only_the_task_it_trains():
  demo = load(os.path.join(REPO, "configs", "demo.py"))
  assert tuple(demo.eval_tasks) == (demo.corruption.name,)
