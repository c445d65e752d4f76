"""Test set-up: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from configs import common  # pylint: disable=g-import-not-at-top
from tiny_config import get_config as make_tiny_config  # pylint: disable=g-import-not-at-top

SHARED_TFDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tfds")


@pytest.fixture
def tiny_config():
  """A fresh test-sized pretraining config (tests/tiny_config.py) for each test."""
  return make_tiny_config()


def write_tfds_dataset(data_dir, name="tiny_colors", num_train=24, num_validation=8, size=20):
  """Prepares a TFDS data set under `data_dir`: example i is a flat image of grey level 8·i.

  Returns the prepared '<data_dir>/<name>/<version>' directory.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def examples(offset, n):
    levels = 8 * (offset + np.arange(n))
    images = np.broadcast_to(levels[:, None, None, None], (n, size, size + 4, 3))
    return tf.data.Dataset.from_tensor_slices(
        {"image": images.astype(np.uint8), "label": np.arange(n) % 3})

  builder = tfds.dataset_builders.AdhocBuilder(
      name=name, version="1.0.0", data_dir=str(data_dir),
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=3)}),
      split_datasets={"train": examples(0, num_train),
                      "validation": examples(num_train, num_validation)})
  builder.download_and_prepare()
  return str(builder.data_dir)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A small prepared TFDS data set written by the tests themselves."""
  return write_tfds_dataset(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def pretrained_workdir(tmp_path_factory):
  """A tiny model pretrained for 2 steps, with learned position embeddings."""
  from ebm_vision import train  # pylint: disable=g-import-not-at-top
  c = common.get_pretraining_config()
  common.tiny_model(c)
  c.data.source, c.num_train_steps, c.eval_tasks = "dead_leaves", 2, ("mask",)
  c.model.posemb = "learn"
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  train.train_and_evaluate(c, workdir)
  return workdir
