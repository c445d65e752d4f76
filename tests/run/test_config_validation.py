"""A bad config value fails at start-up with one line naming its field."""
import os
import subprocess
import sys

import pytest

from ebm_vision.run import config_validation
from ebm_vision.run.config_validation import ConfigError

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.mark.parametrize("field,value", [
    ("energy.readout", "linear"), ("restore.remat", "full"), ("restore.num_steps", 0),
    ("restore.update_region", "inside"), ("restore.step_size_jitter", 1.0),
    ("restore.interstep_noise_scale", -0.1), ("loss.type", "l1"), ("loss.target", "hsv"),
    ("corruption.clean_image_fraction", 1.0),
    ("loss.steps", "first"), ("loss.norm_pix_stats", "batch"), ("loss.norm_pix_eps", 0.),
    ("corruption.name", "jigsaw"), ("corruption.mask.fill", "blue"),
    ("corruption.mask.ratio", 1.0), ("model.compute_dtype", "float16"),
    ("model.variant", "Q/16"), ("model.posemb", "rope"), ("data.source", "s3"),
    ("data.image_size", 30), ("batch_size", 12), ("model.num_heads", 5),
    ("mesh.fsdp", 3), ("mesh.tensor", 0), ("stop_after_steps", -1), ("ema_decay", 1.0),
])
def test_bad_value_names_its_field(tiny_config, field, value):
  section, _, name = field.rpartition(".")
  node = tiny_config
  for part in filter(None, section.split(".")):
    node = node[part]
  node[name] = value
  with pytest.raises(ConfigError, match=f"config.{field}="):
    config_validation.validate_pretraining(tiny_config, num_devices=8)


@pytest.mark.parametrize("target", ["hog", "pixels_and_hog"])
def test_hog_cells_must_tile_the_patch(tiny_config, target):
  tiny_config.model.variant, tiny_config.model.patch_size = "Ti/4", None  # Patch from variant.
  tiny_config.loss.target, tiny_config.loss.hog_cell_size = target, 3
  with pytest.raises(ConfigError, match="config.loss.hog_cell_size=3: .*divide .*=4"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)
  tiny_config.loss.hog_cell_size = 2
  config_validation.validate_pretraining(tiny_config, num_devices=8)


def test_norm_pix_cells_must_tile_the_patch(tiny_config):
  tiny_config.model.variant, tiny_config.model.patch_size = "Ti/4", None  # Patch from variant.
  tiny_config.loss.norm_pix_cell_size = 3
  with pytest.raises(ConfigError, match="config.loss.norm_pix_cell_size=3: .*divide .*=4"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)
  for cell in (0, 2):  # 0: the patch size.
    tiny_config.loss.norm_pix_cell_size = cell
    config_validation.validate_pretraining(tiny_config, num_devices=8)


def test_hog_weight_must_be_positive_beside_the_pixel_loss(tiny_config):
  tiny_config.loss.target, tiny_config.loss.hog_weight = "pixels_and_hog", 0.
  with pytest.raises(ConfigError, match="config.loss.hog_weight=0.0: must be > 0"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)
  tiny_config.loss.target = "pixels"  # The weight is read only beside the pixel loss.
  config_validation.validate_pretraining(tiny_config, num_devices=8)


def test_plain_pixel_tasks_are_single_tasks(tiny_config):
  tiny_config.loss.plain_pixel_tasks = ("sr", "blur")
  with pytest.raises(ConfigError, match=r"config.loss.plain_pixel_tasks\[1\]='blur'"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)
  tiny_config.loss.plain_pixel_tasks = ("sr",)
  tiny_config.corruption.name = "compose"  # Composed images follow loss.norm_pix.
  config_validation.validate_pretraining(tiny_config, num_devices=8)


@pytest.mark.parametrize("field,value", [
    ("mode", "pretrain"), ("frozen.knn_k", 0), ("data.source", "dead_leaves"),
    ("frozen.num_train_examples", -1), ("finetune.head_only_fraction", 1.0)])
def test_bad_transfer_value_names_its_field(field, value):
  from configs import common  # pylint: disable=g-import-not-at-top
  c = common.get_transfer_config()
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(ConfigError, match=f"config.{field}="):
    config_validation.validate_transfer(c, num_devices=8)


@pytest.mark.parametrize("field,value", [
    ("corruption.name", "sort"), ("corruption.clean_image_fraction", 0.2),
    ("loss.target", "hog"), ("loss.target", "pixels_and_hog")])
def test_energy_only_value_with_mae_names_its_field(tiny_config, field, value):
  tiny_config.method, tiny_config.viewer.tasks = "mae", ("mask",)
  tiny_config.mae.update(decoder_width=32, decoder_depth=1, decoder_num_heads=2)
  config_validation.validate_pretraining(tiny_config, num_devices=8)
  section, _, name = field.rpartition(".")
  tiny_config[section][name] = value
  with pytest.raises(ConfigError, match=f"config.{field}=.*method='mae'"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)


def test_knn_monitor_needs_labels(tiny_config):
  tiny_config.knn_monitor.every_steps = 10
  with pytest.raises(ConfigError, match="config.knn_monitor.every_steps=10"):
    config_validation.validate_pretraining(tiny_config, num_devices=8)


def test_unwritable_workdir_fails_in_one_line(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(ConfigError, match="not writable"):
    config_validation.check_workdir(str(tmp_path / "a_file" / "run"))


def test_main_rejects_a_bad_override_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={tmp_path}",
       "--config.energy.readout=bogus"], cwd=ROOT, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "ebm-vision: config.energy.readout='bogus': must be one of "
      "['sq_norm', 'sq_norm_pooled', 'sq_norm_residual', 'sq_norm_blocks', "
      "'projected_sq_norm', 'reconstruction']")


@pytest.mark.parametrize("override,expected", [
    ("--config.restore.num_stepz=3",
     """ebm-vision: bad --config override: 'num_stepz' Did you mean "num_steps" instead of "num_stepz"?"""),
    ("--config.batch_size=abc",
     "ebm-vision: flag --config.batch_size=abc: invalid literal for int() with base 10: 'abc'"),
])
def test_main_rejects_unknown_or_ill_typed_fields_in_one_line(tmp_path, override, expected):
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={tmp_path}", override],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == expected


def test_help_lists_the_modes_every_config_and_how_to_override(tmp_path):
  result = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  for name in os.listdir(os.path.join(ROOT, "configs")):
    if name.endswith(".py") and name not in ("__init__.py", "common.py"):
      assert f"configs/{name}" in result.stdout, name
  for text in ("--config.FIELD=VALUE", "'finetune', 'linear_probe' or 'knn'", "--mode=restore",
               "python -m ebm_vision.export"):
    assert text in result.stdout


def test_an_argument_to_a_config_without_one_fails_in_one_line(tmp_path):
  result = subprocess.run([sys.executable, "main.py", "--config=configs/demo.py:vit_l",
                           f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "ebm-vision: --config=configs/demo.py: this config takes no ':argument' "
      "(configs/vit_b.py and configs/tiny_imagenet.py take task=...)"]
