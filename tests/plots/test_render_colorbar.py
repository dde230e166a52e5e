"""The attention maps' colour bar: heatmap's own scale, 0 on the left, 1 on the right."""

import numpy as np
from PIL import Image

from detlab.engine import render


def test_colorbar_is_heatmap_scale():
    picture = Image.new("RGB", (500, 50), (60, 60, 60))
    out = render.with_colorbar(picture, "probability / attention")
    assert out.width == 500 and out.height == 50 + 12 + 24
    assert np.array_equal(np.asarray(out)[:50], np.asarray(picture))  # picture kept as is
    bar = np.asarray(out)[50 + 4 + 6]  # a row through the bar
    lo = np.asarray(render.heatmap(np.zeros((2, 2))))[0, 0]
    hi = np.asarray(render.heatmap(np.ones((2, 2))))[0, 0]
    assert np.array_equal(bar[8], lo) and np.array_equal(bar[8 + 255], hi)
