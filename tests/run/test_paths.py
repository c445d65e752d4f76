"""Workdirs in a bucket (gs://) and workdirs shared by the processes of a multi-host run."""
import os
import sys
import threading

import fsspec  # pylint: disable=unused-import  # Loads fsspec.registry.
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

from ebm_vision.run import config_validation, image_grid, paths, run_config
from ebm_vision.transfer import pretrained


class FakeBucket(MemoryFileSystem):
  """An in-memory stand-in for GCS: gs:// paths are kept whole as its keys."""
  protocol = ("gs", "gcs")
  root_marker = ""


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
  """Routes epath's gs:// paths to an empty in-memory bucket; runs in an empty cwd."""
  monkeypatch.setattr(epath.gpath, "_is_tf_installed", lambda: False)  # Else tf.io.gfile.
  registry = sys.modules["fsspec.registry"]._registry  # pylint: disable=protected-access
  monkeypatch.setitem(registry, "gcs", FakeBucket)  # Undone after the test.
  FakeBucket.store.clear()
  FakeBucket.pseudo_dirs[:] = [""]
  monkeypatch.chdir(tmp_path)
  yield FakeBucket.store
  FakeBucket.store.clear()


def test_as_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path("gs://bucket/run")) == "gs://bucket/run"
  assert str(paths.as_path("run")) == str(tmp_path / "run")


def test_workdir_in_a_bucket_is_written_there_and_not_on_local_disk(fake_gcs, tmp_path):
  config_validation.check_workdir("gs://bucket/run")
  config = run_config.ml_collections.ConfigDict({"model": {"width": 32}, "seed": 3})
  run_config.save("gs://bucket/run", config)
  image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), np.uint8)
  image_grid.save_png("gs://bucket/run/restorations/mask_step_00000001.png", image)

  assert list(tmp_path.iterdir()) == []  # No local folder named 'gs:'.
  assert sorted(fake_gcs) == ["gs://bucket/run/config.json",
                              "gs://bucket/run/restorations/mask_step_00000001.png"]
  assert run_config.load("gs://bucket/run") == config
  with epath.Path("gs://bucket/run/restorations/mask_step_00000001.png").open("rb") as f:
    np.testing.assert_array_equal(np.asarray(Image.open(f)), image)


def test_checkpoint_in_a_bucket_is_found_by_its_workdir_or_its_folder(fake_gcs):
  for step in (3, 12):
    (epath.Path("gs://bucket/run/checkpoints") / str(step) / "state").mkdir(parents=True)
  run_config.save("gs://bucket/run", run_config.ml_collections.ConfigDict({"mode": "pretrain"}))
  found = pretrained.find_checkpoint("gs://bucket/run")
  assert (str(found.workdir), str(found.item_dir)) == (
      "gs://bucket/run", "gs://bucket/run/checkpoints/12/state")
  assert found.kind == "pretraining"
  assert pretrained.checkpoint_step("gs://bucket/run") == 12
  assert pretrained.checkpoint_step("gs://bucket/run/checkpoints/3") == 3
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    pretrained.checkpoint_step("gs://bucket/elsewhere")


def test_processes_probe_one_workdir_at_once(tmp_path):
  """Every process of a multi-host run checks the shared workdir at start-up."""
  errors = []

  def probe():
    try:
      for _ in range(50):
        config_validation.check_workdir(str(tmp_path))
    except config_validation.ConfigError as e:
      errors.append(e)

  threads = [threading.Thread(target=probe) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors[0]
  assert list(tmp_path.iterdir()) == []  # Every probe removed.


def test_config_data_dirs_are_relative_to_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Not the repository: the result must not depend on the cwd.
  resolved = paths.repo_relative("../shared/data/tfds")
  assert resolved == os.path.normpath(os.path.join(paths.REPO_ROOT, "..", "shared", "data", "tfds"))
  assert os.path.isfile(os.path.join(paths.REPO_ROOT, "main.py"))
  assert paths.repo_relative("/abs/dir") == "/abs/dir"
  assert paths.repo_relative("gs://bucket/tfds") == "gs://bucket/tfds"


def test_run_label_keeps_the_sweep_and_the_run():
  assert paths.run_label("/work/runs/tta21_s0/energy_mask_s0/") == "tta21_s0/energy_mask_s0"
  assert paths.run_label("random") == "random"
