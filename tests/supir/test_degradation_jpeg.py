"""The IJG quantisation tables: exactly what libjpeg (through OpenCV) writes at every quality."""

import cv2
import numpy as np

from supir.degradation import jpeg
from tests.supir.test_degradation_cpu import jpeg_quant_tables


def test_tables_equal_libjpeg_at_every_quality():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for q in jpeg.QUALITIES:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        written = jpeg_quant_tables(buf.tobytes())
        luma, chroma = jpeg.quant_tables(int(q))
        np.testing.assert_array_equal(written[0], luma, err_msg=f"quality {q}")
        np.testing.assert_array_equal(written[1], chroma, err_msg=f"quality {q}")
        np.testing.assert_array_equal(jpeg.LUMA_BY_QUALITY[q - 1], luma.ravel())
        np.testing.assert_array_equal(jpeg.CHROMA_BY_QUALITY[q - 1], chroma.ravel())


def test_quality_scaling_ends_and_clamping():
    np.testing.assert_array_equal(jpeg.quant_tables(50)[0], jpeg.LUMA)  # quality 50 = the Annex K table
    assert (jpeg.quant_tables(100)[1] == 1).all() and (jpeg.quant_tables(1)[0] == 255).all()
    # libjpeg clamps qualities outside 1..100
    np.testing.assert_array_equal(jpeg.quant_tables(0)[0], jpeg.quant_tables(1)[0])
    np.testing.assert_array_equal(jpeg.quant_tables(150)[0], jpeg.quant_tables(100)[0])
    assert jpeg.LUMA_BY_QUALITY.shape == jpeg.CHROMA_BY_QUALITY.shape == (100, 64)
