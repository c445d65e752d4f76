"""PNG grids of images (numpy + PIL)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def add_header(grid: np.ndarray, labels: Sequence[str], title: str = "",
               pad: int = 2) -> np.ndarray:
  """Puts a white band above `grid` with `title` and one label centred over each of its
  equally wide columns (PIL's built-in font, so no font files are needed)."""
  font = ImageFont.load_default()
  line = font.getbbox("Ag")[3] + 4
  height = line * (2 if title else 1) + pad
  image = Image.new("RGB", (grid.shape[1], grid.shape[0] + height), "white")
  image.paste(Image.fromarray(grid), (0, height))
  draw = ImageDraw.Draw(image)
  if title:
    draw.text((pad + 2, 2), title, fill="black", font=font)
  width = (grid.shape[1] - pad) / len(labels)
  for j, label in enumerate(labels):
    text_width = draw.textlength(label, font=font)
    draw.text((pad + j * width + max(0., (width - text_width) / 2), height - line), label,
              fill="black", font=font)
  return np.asarray(image)


def save_png(path, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] array as PNG to `path` (local or gs://), creating its folder."""
  path = paths.as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")


def restoration_grid(diag: dict, pixel_mean, pixel_std, min_height: int = 128,
                     title: str = "") -> np.ndarray:
  """Rows: images; columns, labelled above: clean | corrupted | after descent step 1 … K.

  Small images are enlarged (nearest neighbour) to at least `min_height` pixels.
  """
  to_uint8 = lambda x: pixels.to_uint8(x, pixel_mean, pixel_std)
  columns = [to_uint8(diag["clean"]), to_uint8(diag["corrupted"])]
  columns += [to_uint8(x) for x in diag["trajectory"]]
  steps = len(diag["trajectory"])
  labels = ["clean", "corrupted"] + [f"after step {k + 1}" for k in range(steps)]
  grid = make_grid(columns, scale=max(1, min_height // columns[0].shape[1]))
  return add_header(grid, labels, title)
