"""Naming the damaged shard and record behind tf.data's 'truncated/corrupted record' errors."""
import numpy as np
import tensorflow as tf

from ebm_vision.data import tfrecord_check


def write_records(path, n=5):
  with tf.io.TFRecordWriter(str(path)) as w:
    for i in range(n):
      w.write(np.random.default_rng(i).bytes(100 + 10 * i))
  return str(path)


def test_crc_matches_tensorflow_records(tmp_path):
  path = write_records(tmp_path / "a.tfrecord")
  assert tfrecord_check.record_at(path, 0) == (0, "intact")
  assert tfrecord_check.count_records(path)[0] == 5


def test_a_truncated_or_flipped_record_is_found_at_tensorflows_offset(tmp_path):
  good = write_records(tmp_path / "good.tfrecord")
  bad = write_records(tmp_path / "bad.tfrecord")
  data = bytearray(open(bad, "rb").read())
  offset = 12 + 100 + 4  # Record 1 starts after record 0 (length 100).
  data[offset + 12 + 5] ^= 0xFF  # One bit pattern flipped in record 1's data.
  open(bad, "wb").write(bytes(data))
  message = None
  try:
    for _ in tf.data.TFRecordDataset(bad):
      pass
  except tf.errors.DataLossError as e:
    message = str(e)
  assert tfrecord_check.error_offset(message) == offset + 12  # Where record 1's data starts.
  assert tfrecord_check.explain([good, bad], message) == (
      f"{bad}: record 1 (byte {offset + 12}) is corrupted")
  open(bad, "wb").write(bytes(data[:offset + 20]))  # Now cut inside record 1.
  assert tfrecord_check.record_at(bad, offset) == (1, "truncated")
  assert tfrecord_check.explain([good, bad], "elements but contained only 1", [5, 5]) == (
      f"{bad}: holds 1 complete records where the data set says 5 (truncated at byte "
      f"{offset + 20})")
