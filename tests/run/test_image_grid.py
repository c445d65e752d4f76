"""Restoration grids: images laid out by column, with the task and column labels drawn above."""
import numpy as np

from ebm_vision.run import image_grid


def test_header_labels_every_column_and_keeps_the_grid_below():
  columns = [np.full((2, 24, 40, 3), 100 + 50 * j, np.uint8) for j in range(3)]
  grid = image_grid.make_grid(columns)
  labelled = image_grid.add_header(grid, ["clean", "corrupted", "step 1"], title="mask")
  band = labelled.shape[0] - grid.shape[0]
  assert band > 0 and labelled.shape[1] == grid.shape[1]
  np.testing.assert_array_equal(labelled[band:], grid)  # The images are untouched.
  header = labelled[:band].min(axis=-1) < 128  # Dark pixels: drawn text.
  width = grid.shape[1] // 3
  label_row = header[band // 2:]
  for j in range(3):  # Each column has its own label above it.
    assert label_row[:, j * width:(j + 1) * width].any()
  assert header[:band // 2, :width].any()  # The title, on its own line.
