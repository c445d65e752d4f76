"""tf.data input pipeline: the only module of ebm_vision that imports TensorFlow.

Yields per-process batches {'image': uint8 [local_batch, H, W, 3]}; the trainer
assembles the global batch. Every random choice is a stateless op seeded by
(seed, process, position in the stream), so a stream is a pure function of the
config and its iterator state can be saved and restored exactly.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Optional

from absl import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ebm_vision.data import tfrecord_check
from ebm_vision.run import paths
from ebm_vision.run.errors import DataError


def hide_accelerators_from_tf() -> None:
  """Keeps TensorFlow off GPUs/TPUs, which belong to JAX."""
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------
def get_builder(data_config) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by the config; fails with what was looked for, and where."""
  if data_config.builder_dir:
    path = paths.repo_relative(data_config.builder_dir)
    if not tf.io.gfile.exists(os.path.join(path, "dataset_info.json")):
      raise FileNotFoundError(
          f"data.builder_dir={path!r} is not a prepared TFDS dataset directory "
          "(no dataset_info.json there); expected '<data_dir>/<name>/<version>'.")
    return tfds.builder_from_directory(path)
  data_dir = paths.repo_relative(data_config.data_dir) if data_config.data_dir else None
  where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  if data_dir and data_dir != os.path.expanduser(data_config.data_dir):
    where += f" (data.data_dir={data_config.data_dir!r}, relative to the repository)"
  try:
    builder = tfds.builder(data_config.name, data_dir=data_dir)
  except Exception as e:  # Unknown name and nothing prepared under that name.
    raise FileNotFoundError(
        f"TFDS data set data.name={data_config.name!r} not found under "
        f"data_dir={where} ({type(e).__name__}). Prepare it there (for ImageNet: "
        "download the tars and run `tfds build imagenet2012 --data_dir=...`) "
        "or set data.data_dir / data.builder_dir.") from None
  if not builder.info.splits:
    raise FileNotFoundError(
        f"TFDS data set {data_config.name!r} is known but not prepared under "
        f"data_dir={where} (looked for {builder.data_dir}).")
  return builder


def check_split(builder: tfds.core.DatasetBuilder, split: str) -> None:
  """Raises a one-line error when `split` is not one of the builder's splits."""
  base = split.split("[")[0]
  if base not in builder.info.splits:
    raise DataError(f"split {split!r} not in {builder.info.name}'s splits "
                    f"{sorted(builder.info.splits)}")


def shard_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The TFRecord files of `split` (a sub-split like 'train[:10%]' names its whole split's)."""
  info = builder.info.splits[split.split("[")[0]]
  return [os.path.join(builder.data_dir, f) for f in info.filenames]


# What reading a damaged TFRecord raises: a bad record, or (TFDS) a shard that ends early.
DATA_LOSS_ERRORS = (tf.errors.DataLossError, tf.errors.FailedPreconditionError)


def data_loss_error(builder: tfds.core.DatasetBuilder, split: str,
                    error: tf.errors.OpError) -> DataError:
  """A one-line DataError naming the damaged shard and record, and how to mend it."""
  first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
  where = tfrecord_check.explain(shard_files(builder, split), first_line,
                                 builder.info.splits[split.split("[")[0]].shard_lengths)
  where = where or f"a shard of {builder.info.name}/{split} ({first_line.split('}')[-1].strip()})"
  return DataError(f"{where}. The prepared data set in {builder.data_dir} is damaged: copy it "
                   f"again, or rebuild it with `tfds build {builder.info.name} "
                   "--data_dir=<data_dir>`")


def read_or_explain(iterator: Iterator, builder: Optional[tfds.core.DatasetBuilder],
                    split: str) -> Iterator:
  """`iterator`, with a damaged TFRecord reported by `data_loss_error`."""
  try:
    yield from iterator
  except DATA_LOSS_ERRORS as e:
    if builder is None:
      raise
    raise data_loss_error(builder, split, e) from None


def dead_leaves_image(seed: tf.Tensor, size: int, num_disks: int = 128) -> tf.Tensor:
  """One procedural 'dead leaves' image, uint8 [size, size, 3].

  Occluding disks with a power-law radius density (∝ r⁻³) give scale-invariant
  statistics close to natural images' (Lee, Mumford & Huang 2001). Disk 0 lies on
  top; pixels no disk covers take a background colour.
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  centers = tf.random.stateless_uniform([num_disks, 2], seeds[0], 0., float(size))
  r_min, r_max = 2.0, size / 2.
  u = tf.random.stateless_uniform([num_disks], seeds[1])
  radii = (r_min**-2 + u * (r_max**-2 - r_min**-2))**-0.5
  colors = tf.random.stateless_uniform([num_disks + 1, 3], seeds[2])
  # A random global contrast/brightness so that images are not all alike.
  gain = tf.random.stateless_uniform([1, 3], seeds[3], 0.5, 1.0)
  coords = tf.range(size, dtype=tf.float32) + 0.5
  dy = coords[None, :, None] - centers[:, 0, None, None]
  dx = coords[None, None, :] - centers[:, 1, None, None]
  covered = dy**2 + dx**2 <= radii[:, None, None]**2  # [num_disks, size, size]
  first = tf.argmax(tf.concat([covered, tf.ones([1, size, size], tf.bool)], 0)
                    , axis=0, output_type=tf.int32)  # Top-most disk, or background.
  image = tf.gather(colors * gain, first)
  return tf.cast(tf.round(image * 255.), tf.uint8)


# ----------------------------------------------------------------------------
# Preprocessing.
# ----------------------------------------------------------------------------
def decode_random_resized_crop(encoded: tf.Tensor, seed: tf.Tensor, size: int,
                               min_scale: float) -> tf.Tensor:
  """Inception-style crop (area in [min_scale, 1], ratio in [3/4, 4/3]) + flip."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

  def crop_window(image_shape):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, tf.zeros([0, 0, 4], tf.float32), seed=crop_seed,
        area_range=(min_scale, 1.), aspect_ratio_range=(3. / 4., 4. / 3.),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin, crop_size

  def jpeg():
    begin, crop_size = crop_window(tf.image.extract_jpeg_shape(encoded))
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

  def other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    begin, crop_size = crop_window(tf.shape(image))
    return tf.slice(image, begin, crop_size)

  image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
  image = tf.image.resize(image, (size, size), method="bicubic", antialias=True)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode_center_crop(encoded: tf.Tensor, size: int, crop_fraction: float) -> tf.Tensor:
  """Resizes the short side to size/crop_fraction, then takes the centre size×size."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  short = tf.cast(tf.minimum(h, w), tf.float32)
  scale = tf.math.ceil(size / crop_fraction) / short
  new_h = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
  new_w = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
  image = tf.image.resize(image, (new_h, new_w), method="bicubic", antialias=True)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# ----------------------------------------------------------------------------
# Datasets.
# ----------------------------------------------------------------------------
def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 0  # tf.data's default pool.
  return options


def _element_seeds(ds: tf.data.Dataset, seed: int, process_index: int) -> tf.data.Dataset:
  """Pairs each element with a stateless seed from its position in the stream."""
  return ds.enumerate().map(
      lambda i, x: (tf.stack([tf.cast(seed * 1_000_003 + process_index, tf.int64), i]), x))


def train_dataset(data_config, *, local_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  with_labels: bool = False) -> tf.data.Dataset:
  """Endless, shuffled, augmented batches of this process's part of the train split.

  Batches hold 'image' (uint8) and, `with_labels`, 'label' (TFDS sources only).
  """
  size = data_config.image_size
  if data_config.source == "dead_leaves":
    # Example j of global batch b comes from the seed (seed, b·global_batch + j) on
    # whichever process holds it, so the global stream is the same for any process count.
    global_batch_size = local_batch_size * process_count
    ds = tf.data.Dataset.range(2**62).map(
        lambda i: (i // local_batch_size * global_batch_size
                   + process_index * local_batch_size + i % local_batch_size))
    ds = ds.map(lambda g: {"image": dead_leaves_image(
        tf.stack([tf.constant(seed * 1_000_003, tf.int64), g]), size)},
                num_parallel_calls=tf.data.AUTOTUNE)
  else:
    builder = get_builder(data_config)
    check_split(builder, data_config.train_split)
    split = tfds.split_for_jax_process(data_config.train_split, process_index=process_index,
                                       process_count=process_count, drop_remainder=True)
    ds = builder.as_dataset(
        split=split, shuffle_files=True,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, options=_options()))
    ds = ds.repeat().shuffle(data_config.shuffle_buffer, seed=seed)

    def preprocess(s, ex):
      out = {"image": decode_random_resized_crop(ex["image"], s, size,
                                                 data_config.crop_min_scale)}
      if with_labels:
        out["label"] = ex["label"]
      return out

    ds = _element_seeds(ds, seed, process_index).map(preprocess,
                                                     num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.with_options(_options()).prefetch(data_config.prefetch_batches)


def eval_images(data_config, num_images: int, seed: int = 0) -> np.ndarray:
  """The first `num_images` images of the eval split, centre-cropped, uint8.

  The same on every process: a fixed held-out batch for restoration grids
  and metrics. The dead-leaves source draws them from a seed no training
  stream uses.
  """
  size = data_config.image_size
  if data_config.source == "dead_leaves":
    ds = tf.data.Dataset.range(num_images).map(
        lambda i: dead_leaves_image(tf.stack([tf.constant(-1 - seed, tf.int64), i]), size))
  else:
    builder = get_builder(data_config)
    check_split(builder, data_config.eval_split)
    ds = builder.as_dataset(split=data_config.eval_split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.take(num_images).map(lambda ex: decode_center_crop(
        ex["image"], size, data_config.eval_crop_fraction))
    return np.stack(list(read_or_explain(ds.as_numpy_iterator(), builder,
                                         data_config.eval_split)))
  return np.stack(list(ds.as_numpy_iterator()))


def split_size(data_config, split: str) -> int:
  """Number of examples of `split` (sub-splits like 'train[:10%]' included)."""
  return get_builder(data_config).info.splits[split].num_examples


def num_classes(data_config) -> int:
  """Number of classes of the data set's 'label' feature."""
  return get_builder(data_config).info.features["label"].num_classes


def labeled_batches(data_config, split: str, batch_size: int,
                    num_examples: Optional[int] = None) -> Iterator[dict]:
  """Centre-cropped batches of `split` in order (the first `num_examples`), for evaluation.

  Yields numpy {'image' uint8, 'label', 'mask'}; the last batch is padded to
  `batch_size`, with mask 0 on the padding, so every batch has one shape.
  """
  builder = get_builder(data_config)
  check_split(builder, split)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  if num_examples:
    ds = ds.take(num_examples)
  size = data_config.image_size
  ds = ds.map(lambda ex: {
      "image": decode_center_crop(ex["image"], size, data_config.eval_crop_fraction),
      "label": ex["label"], "mask": tf.constant(1, tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE)

  def pad(batch):
    missing = batch_size - tf.shape(batch["mask"])[0]
    return {k: tf.pad(v, [[0, missing]] + [[0, 0]] * (len(v.shape) - 1))
            for k, v in batch.items()}

  ds = ds.batch(batch_size).map(pad).prefetch(data_config.prefetch_batches)
  return read_or_explain(ds.as_numpy_iterator(), builder, split)


class DataIterator:
  """A numpy iterator over a tf.data stream whose position can be saved to disk.

  A damaged TFRecord of `builder`'s `split` is reported by `data_loss_error`.
  """

  def __init__(self, ds: tf.data.Dataset, builder=None, split: str = ""):
    self._iterator = iter(ds)
    self._builder, self._split = builder, split
    self._peeked = None

  def __iter__(self) -> Iterator[dict]:
    return self

  def peek(self) -> dict:
    """The next batch, left in place: the next `next()` returns it."""
    if self._peeked is None:
      self._peeked = next(self)
    return self._peeked

  def __next__(self) -> dict:
    if self._peeked is not None:
      batch, self._peeked = self._peeked, None
      return batch
    try:
      batch = next(self._iterator)
    except DATA_LOSS_ERRORS as e:
      if self._builder is None:
        raise
      raise data_loss_error(self._builder, self._split, e) from None
    return {k: v._numpy() for k, v in batch.items()}  # pylint: disable=protected-access

  def save(self, path: str) -> None:
    """Writes the iterator state (including shuffle buffers) under `path`."""
    if self._peeked is not None:
      raise RuntimeError("a peeked batch is pending: the saved state would skip it")
    tf.train.Checkpoint(iterator=self._iterator).write(path)

  def restore(self, path: str) -> None:
    """Moves the iterator to the state written by `save(path)`."""
    tf.train.Checkpoint(iterator=self._iterator).read(path).assert_consumed()


def iterator_state_path(workdir: str, step: int, process_index: int) -> str:
  """Where process `process_index` keeps its iterator state for checkpoint `step`."""
  return os.path.join(workdir, "data_state", str(step), f"process_{process_index}")


def prune_iterator_states(workdir: str, keep_steps: Iterable[int]) -> None:
  """Deletes saved iterator states of checkpoints that no longer exist."""
  root = os.path.join(workdir, "data_state")
  keep = {str(s) for s in keep_steps}
  for name in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(root) else []:
    name = name.rstrip("/")
    if name not in keep:
      try:
        tf.io.gfile.rmtree(os.path.join(root, name))  # Also in a gs:// bucket.
      except tf.errors.NotFoundError:  # Another process of the run deleted it first.
        pass


def create_train_iterator(data_config, *, global_batch_size: int, seed: int,
                          process_index: int, process_count: int,
                          start_step: int = 0, workdir: Optional[str] = None,
                          with_labels: bool = False) -> DataIterator:
  """The train stream of this process, positioned for `start_step`.

  With data.checkpoint_iterator, a run resumed at `start_step` restores the
  saved iterator state and continues exactly where it stopped. Otherwise a
  resumed run starts a new stream seeded with (seed, start_step), so it does
  not repeat the examples it already saw in the same order.
  """
  if global_batch_size % process_count:
    raise ValueError(f"batch_size={global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  state_path = None
  if start_step and data_config.checkpoint_iterator and workdir:
    state_path = iterator_state_path(workdir, start_step, process_index)
    if not tf.io.gfile.exists(state_path + ".index"):
      logging.warning("No saved data iterator state at %s: starting a re-seeded stream.",
                      state_path)
      state_path = None
  stream_seed = seed
  if start_step and state_path is None:
    stream_seed = int(np.random.SeedSequence([seed, start_step]).generate_state(1)[0] >> 1)
  ds = train_dataset(data_config, local_batch_size=global_batch_size // process_count,
                     seed=stream_seed, process_index=process_index,
                     process_count=process_count, with_labels=with_labels)
  builder = get_builder(data_config) if data_config.source == "tfds" else None
  iterator = DataIterator(ds, builder, data_config.train_split)
  if state_path:
    iterator.restore(state_path)
  return iterator
