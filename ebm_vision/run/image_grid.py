"""PNG grids of images (numpy + PIL)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ebm_vision.data import pixels
from ebm_vision.run import paths


def make_grid(columns: Sequence[np.ndarray], pad: int = 2, scale: int = 1) -> np.ndarray:
  """Lays out uint8 [N, H, W, 3] arrays side by side: row i = image i of every column."""
  columns = [np.asarray(c, np.uint8) for c in columns]
  n, h, w, ch = columns[0].shape
  rows, cols = n, len(columns)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), 255, np.uint8)
  for j, column in enumerate(columns):
    for i in range(rows):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = column[i]
  if scale > 1:
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  return grid


def save_png(path, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] array as PNG to `path` (local or gs://), creating its folder."""
  path = paths.as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")


def restoration_grid(diag: dict, pixel_mean, pixel_std, min_height: int = 128) -> np.ndarray:
  """Rows: images; columns: clean | corrupted | restored after each step.

  Small images are enlarged (nearest neighbour) to at least `min_height` pixels.
  """
  to_uint8 = lambda x: pixels.to_uint8(x, pixel_mean, pixel_std)
  columns = [to_uint8(diag["clean"]), to_uint8(diag["corrupted"])]
  columns += [to_uint8(x) for x in diag["trajectory"]]
  return make_grid(columns, scale=max(1, min_height // columns[0].shape[1]))
