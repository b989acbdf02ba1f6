"""The report's reconstruction grid is readable: small images enlarged by pixel repetition, columns labelled."""

import numpy as np
import torch
from PIL import Image

from gaussquant.eval.plots import compose_grid, save_image_grid, to_uint8_hwc
from gaussquant.eval.report import protocol_table, write_report


def test_small_images_are_enlarged_nearest_neighbour_and_labelled(tmp_path):
    g = torch.Generator().manual_seed(0)
    columns = [torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3)]
    path = save_image_grid(columns, tmp_path / "grid.png", labels=["original", "continuous", "GQ"], gap=4)
    grid = np.asarray(Image.open(path))
    # 32 px tiles x 6 = 192 px; 3 columns + 4 gaps wide; label band + 2 rows + gaps high
    assert grid.shape[1] == 3 * 192 + 4 * 4 and grid.shape[0] > 2 * 192 + 3 * 4
    band = grid[: grid.shape[0] - 2 * 192 - 3 * 4]
    assert (band < 100).any()  # the labels are drawn (dark text on white)
    top = grid.shape[0] - 2 * 192 - 2 * 4 - 4 + 4
    tile = grid[top: top + 192, 4: 4 + 192]
    original = to_uint8_hwc(columns[0])[0]
    # every 6x6 block is one original pixel: no interpolated values
    assert np.array_equal(tile[::6, ::6], original) and np.array_equal(tile[5::6, 5::6], original)


def test_unlabelled_big_images_stay_at_their_size(tmp_path):
    x = torch.zeros(1, 3, 256, 200)
    grid = np.asarray(Image.open(save_image_grid([x, x], tmp_path / "g.png", gap=2)))
    assert grid.shape[:2] == (256 + 4, 2 * 200 + 6)


def test_rows_of_different_sizes_with_captions(tmp_path):
    rows = [[np.zeros((40, 60, 3), np.uint8)] * 2, [np.full((80, 30, 3), 200, np.uint8)] * 2]
    path = compose_grid(rows, tmp_path / "c.png", column_labels=["a", "b"], captions=[["x", "y"], ["z", "w"]])
    assert np.asarray(Image.open(path)).shape[1] >= 2 * 60


def test_report_grid_is_labelled_and_protocol_has_no_none(tmp_path):
    x = torch.zeros(2, 3, 16, 16)
    results = {"num_images": 2, "psnr": 20.0, "protocol": {"model": None, "data": "held-out crops"}}
    report = write_report(tmp_path, results, grid_columns=[x, x], grid_names=["original", "reconstruction"])
    assert "None" not in report.read_text() and "| data | held-out crops |" in report.read_text()
    assert np.asarray(Image.open(tmp_path / "reconstructions.png")).shape[1] >= 2 * 192
    assert "None" not in protocol_table({"a": {"b": None, "c": 1}})
