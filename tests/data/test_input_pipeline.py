"""tf.data pipeline: sources, per-process splitting, determinism, resumable iterators."""
import chex
import numpy as np
import pytest
import tensorflow as tf

from configs import common
from ebm_vision.data import input_pipeline
from ebm_vision.run import errors


def data_config(**overrides):
  c = common.get_pretraining_config().data
  c.image_size, c.shuffle_buffer = 16, 16
  for k, v in overrides.items():
    c[k] = v
  return c


def grey_levels(batch):
  """Recovers the example indices of flat images of grey level 8·i."""
  return np.round(batch["image"].astype(np.float32).mean(axis=(1, 2, 3)) / 8).astype(int)


def test_tfds_batches_are_uint8_of_the_configured_size(tfds_dir):
  it = input_pipeline.create_train_iterator(
      data_config(builder_dir=tfds_dir), global_batch_size=4, seed=0, process_index=0,
      process_count=1)
  batch = next(it)
  chex.assert_shape(batch["image"], (4, 16, 16, 3))
  assert batch["image"].dtype == np.uint8


def test_each_process_reads_a_disjoint_part_of_the_split(tfds_dir):
  seen = []
  for process in range(2):
    it = input_pipeline.create_train_iterator(
        data_config(builder_dir=tfds_dir), global_batch_size=8, seed=0,
        process_index=process, process_count=2)
    # 12 examples per process; the shuffle buffer mixes epochs, so read three.
    seen.append(set(np.concatenate([grey_levels(next(it)) for _ in range(9)])))
  assert len(seen[0]) == len(seen[1]) == 12
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(24))


def test_dead_leaves_global_batches_do_not_depend_on_the_process_count():
  """So that a run on 2 processes sees the data of the same run on 1 (test_multihost)."""
  def global_batches(process_count):
    iterators = [input_pipeline.create_train_iterator(
        data_config(source="dead_leaves"), global_batch_size=4, seed=0, process_index=p,
        process_count=process_count) for p in range(process_count)]
    return [np.concatenate([next(it)["image"] for it in iterators]) for _ in range(2)]
  one, two = global_batches(1), global_batches(2)
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(one[0], one[1])


def test_same_seed_same_stream_other_seed_other_stream(tfds_dir):
  def first_batches(seed):
    it = input_pipeline.create_train_iterator(
        data_config(builder_dir=tfds_dir), global_batch_size=4, seed=seed,
        process_index=0, process_count=1)
    return [next(it)["image"] for _ in range(3)]
  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, z) for x, z in zip(a, c))


@pytest.mark.parametrize("source", ["tfds", "dead_leaves"])
def test_saved_iterator_resumes_exactly(tfds_dir, tmp_path, source):
  cfg = data_config(builder_dir=tfds_dir, source=source)
  make = lambda: input_pipeline.create_train_iterator(
      cfg, global_batch_size=4, seed=0, process_index=0, process_count=1)
  it = make()
  for _ in range(5):  # Past an epoch boundary (24 examples) for the TFDS source.
    next(it)
  it.save(str(tmp_path / "state"))
  expected = [next(it)["image"] for _ in range(4)]
  resumed = make()
  resumed.restore(str(tmp_path / "state"))
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["image"], want)


def test_peeked_batch_is_the_next_one_and_blocks_saving(tfds_dir, tmp_path):
  make = lambda: input_pipeline.create_train_iterator(
      data_config(builder_dir=tfds_dir), global_batch_size=4, seed=0, process_index=0,
      process_count=1)
  expected = [next(it)["image"] for it in [make()] for _ in range(2)]
  it = make()
  np.testing.assert_array_equal(it.peek()["image"], expected[0])
  np.testing.assert_array_equal(it.peek()["image"], expected[0])  # Still in place.
  with pytest.raises(RuntimeError, match="peeked batch is pending"):
    it.save(str(tmp_path / "state"))
  for want in expected:
    np.testing.assert_array_equal(next(it)["image"], want)


def test_eval_images_are_a_fixed_batch_of_the_eval_split(tfds_dir):
  images = input_pipeline.eval_images(data_config(builder_dir=tfds_dir), 3)
  chex.assert_shape(images, (3, 16, 16, 3))
  levels = grey_levels({"image": images})
  assert len(set(levels)) == 3 and all(24 <= i < 32 for i in levels)  # Validation examples.
  np.testing.assert_array_equal(
      images, input_pipeline.eval_images(data_config(builder_dir=tfds_dir), 3))


def test_random_resized_crop_and_centre_crop_shapes():
  image = tf.io.encode_png(tf.cast(tf.random.uniform([30, 50, 3], 0, 255), tf.uint8))
  for encoded in (image, tf.io.encode_jpeg(tf.io.decode_png(image))):
    out = input_pipeline.decode_random_resized_crop(encoded, tf.constant([1, 2], tf.int64),
                                                    24, 0.2)
    assert out.shape == (24, 24, 3) and out.dtype == tf.uint8
    assert input_pipeline.decode_center_crop(encoded, 24, 0.875).shape == (24, 24, 3)


def test_dead_leaves_are_deterministic_and_varied():
  seed = tf.constant([3, 4], tf.int64)
  a = input_pipeline.dead_leaves_image(seed, 32).numpy()
  b = input_pipeline.dead_leaves_image(seed, 32).numpy()
  c = input_pipeline.dead_leaves_image(tf.constant([3, 5], tf.int64), 32).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
  assert len(np.unique(a.reshape(-1, 3), axis=0)) > 5  # Several occluding disks.


def test_missing_dataset_says_what_was_looked_for_and_where(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"imagenet2013.*" + str(tmp_path)):
    input_pipeline.get_builder(data_config(name="imagenet2013", data_dir=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    input_pipeline.get_builder(data_config(builder_dir=str(tmp_path / "nope")))


def test_unknown_split_is_rejected(tfds_dir):
  cfg = data_config(builder_dir=tfds_dir, train_split="trian")
  with pytest.raises(errors.DataError, match="trian"):
    input_pipeline.train_dataset(cfg, local_batch_size=2, seed=0)
