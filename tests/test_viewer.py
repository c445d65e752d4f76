"""The restoration viewer on a freshly trained checkpoint."""
import json
import os

import numpy as np
import pytest

from ebm_vision import train, viewer
from ebm_vision.objectives import corruptions

pytestmark = pytest.mark.slow  # End-to-end runs.


def test_viewer_writes_a_grid_and_metrics_for_every_task(tiny_config, tmp_path, tfds_dir):
  c = tiny_config
  c.num_train_steps = 2
  train.train_and_evaluate(c, str(tmp_path))
  version_dir = os.path.dirname(tfds_dir)
  c.viewer.data_dir, c.viewer.name = os.path.dirname(version_dir), os.path.basename(version_dir)
  c.viewer.split, c.viewer.num_images, c.viewer.num_grid_images = "validation", 6, 3
  report = viewer.restore_and_report(c, str(tmp_path))
  assert set(report) == set(corruptions.CORRUPTIONS) == set(c.viewer.tasks)
  for task, m in report.items():
    assert os.path.exists(tmp_path / "viewer" / f"{task}_step_00000002.png")
    for key in ("psnr_corrupted", "psnr_restored_2", "ssim_restored_1", "energy_clean",
                "energy_restored_2"):
      assert np.isfinite(m[key]), (task, key)
  # The test images are flat greys: grayscale leaves them (nearly) intact, noise does not.
  assert report["color"]["psnr_corrupted"] > 40 > 20 > report["mask"]["psnr_corrupted"]
  with open(tmp_path / "viewer" / "metrics_step_00000002.json") as f:
    assert json.load(f) == report
  table = viewer.format_table(report)
  assert table.splitlines()[0].split()[:3] == ["task", "PSNR", "in"]
  assert len(table.splitlines()) == 1 + len(report)


def test_viewer_without_checkpoint_fails_clearly(tiny_config, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    viewer.restore_and_report(tiny_config, str(tmp_path))
