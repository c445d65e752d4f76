"""Which TFRecord shard a tf.data 'corrupted/truncated record' error came from.

TensorFlow names the byte offset of the bad record (or, for a shard that ends early, how
many elements TFDS expected) but not the file. A TFRecord is
[length: uint64][masked CRC32C of length: uint32][data][masked CRC32C of data: uint32],
so walking the record headers of each shard finds the shard with a record boundary at
that offset, and checking the record there says whether it is truncated or corrupted.
"""
from __future__ import annotations

import re
import struct
from typing import Optional, Sequence

import tensorflow as tf

_CRC_TABLE = []
for _n in range(256):
  _c = _n
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # CRC-32C (Castagnoli), reflected.
  _CRC_TABLE.append(_c)


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data`."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def error_offset(message: str) -> Optional[int]:
  """The byte offset in TensorFlow's 'corrupted record at N' / 'truncated record at N'."""
  match = re.search(r"record at (\d+)", message)
  return int(match.group(1)) if match else None


def record_at(path: str, offset: int) -> Optional[tuple[int, str]]:
  """(index of the record at `offset`, 'truncated' | 'corrupted' | 'intact'), or None when
  no record of the file starts there. TensorFlow reports a truncated record by its start
  and a corrupted one by the start of its data (12 bytes later): both match."""
  with tf.io.gfile.GFile(path, "rb") as f:
    size = f.size()
    position, index = 0, 0
    while position + 12 < offset:
      f.seek(position)
      header = f.read(8)
      if len(header) < 8:
        return None
      position += 12 + struct.unpack("<Q", header)[0] + 4
      index += 1
    if offset not in (position, position + 12):
      return None
    f.seek(position)
    header = f.read(12)
    if len(header) < 12:
      return index, "truncated"
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc:
      return index, "corrupted"
    if position + 12 + length + 4 > size:
      return index, "truncated"
    data = f.read(length)
    data_crc = struct.unpack("<I", f.read(4))[0]
    return index, "corrupted" if masked_crc32c(data) != data_crc else "intact"


def count_records(path: str) -> tuple[int, int]:
  """(complete records, file size) by walking the record headers of a TFRecord file."""
  with tf.io.gfile.GFile(path, "rb") as f:
    size = f.size()
    position, count = 0, 0
    while position + 12 <= size:
      f.seek(position)
      end = position + 12 + struct.unpack("<Q", f.read(8))[0] + 4
      if end > size:
        break
      position, count = end, count + 1
  return count, size


def explain(files: Sequence[str], message: str,
            shard_lengths: Optional[Sequence[int]] = None) -> Optional[str]:
  """Names the shard (and record) behind a tf.data error `message`, or None.

  'corrupted/truncated record at <offset>': the shard with a bad record at that offset.
  'expected to contain N elements but contained only M' (TFDS's check of a shard that
  ended early): the shard holding fewer complete records than `shard_lengths` says.
  """
  offset = error_offset(message)
  if offset is not None:
    for path in files:
      found = record_at(path, offset)
      if found and found[1] != "intact":
        return f"{path}: record {found[0]} (byte {offset}) is {found[1]}"
  if shard_lengths is not None and "elements but contained only" in message:
    for path, expected in zip(files, shard_lengths):
      count, size = count_records(path)
      if count < expected:
        return (f"{path}: holds {count} complete records where the data set says {expected} "
                f"(truncated at byte {size})")
  return None
