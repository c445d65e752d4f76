"""Integration on real images: a few steps on ../shared/data/tfds/tiny_imagenet_a."""
import glob
import os

import numpy as np
import pytest
from ml_collections import config_flags

from configs import common
from conftest import SHARED_TFDS
from ebm_vision import train

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_TFDS, "tiny_imagenet_a")),
    reason="../shared/data/tfds/tiny_imagenet_a is absent")]


def test_a_few_steps_on_tiny_imagenet(tmp_path):
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny_imagenet.py")
  c = config_flags.config_flags._LoadConfigModule("c", path).get_config()  # pylint: disable=protected-access
  common.tiny_model(c, width=64, depth=2, patch_size=8)
  c.data.data_dir = SHARED_TFDS
  c.data.image_size = 32
  c.data.shuffle_buffer = 256
  c.num_train_steps = 3
  c.eval_tasks = ("mask",)
  scalars = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(scalars["train/loss"])
  # 75% of the pixels replaced by the data set's mean colour: about 14 dB on real photos;
  # far off if pixels were normalized or clipped wrongly.
  assert 11 < scalars["eval/mask/psnr_corrupted"] < 17
  grids = glob.glob(str(tmp_path / "restorations" / "*.png"))
  assert grids
