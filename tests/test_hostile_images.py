"""Images that lie quietly: stored sideways with an EXIF tag that says so, or finite
pixel values so large that a float32 normalisation overflows to NaN."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinycnn.mammo.data.preprocess import UnreadableImage, load_preprocessed, normalise, preprocess, read_image


def test_a_jpeg_is_read_as_displayed_by_its_exif_orientation(tmp_path):
    """Orientation 6: stored rotated, displayed turned 90 degrees clockwise. A bright
    top-left corner as displayed is stored at the bottom-left."""
    shown = np.zeros((40, 60), np.uint8)
    shown[:10, :10] = 255                                   # displayed: bright top-left corner
    stored = np.rot90(shown, k=1)                           # what the camera wrote (60 x 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "x.jpg", quality=100, exif=exif)
    image = read_image(tmp_path / "x.jpg")
    assert image.shape == (40, 60)
    assert image[:10, :10].mean() > 200 and image[-10:, -10:].mean() < 50
    # without the tag the same bytes read as stored
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "plain.jpg", quality=100)
    assert read_image(tmp_path / "plain.jpg").shape == (60, 40)


def test_huge_finite_values_normalise_like_the_same_image_at_a_sane_scale(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((50, 40)).astype(np.float32)
    huge = image * np.float32(3e38)
    with np.errstate(over="ignore"):
        assert np.isfinite(huge).all() and not np.isfinite(huge.std())  # the trap: float32 std overflows
    Image.fromarray(huge, mode="F").save(tmp_path / "huge.tif")
    got = load_preprocessed(tmp_path / "huge.tif", 32)
    want = preprocess(image, 32)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_normalise_names_non_finite_pixels_and_keeps_ordinary_bits():
    image = np.random.default_rng(1).random((8, 9)).astype(np.float32)
    np.testing.assert_array_equal(normalise(image), (image - float(image.mean())) / float(image.std()))
    bad = image.copy()
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        normalise(bad)


def test_a_nan_tiff_is_an_unreadable_image_that_names_the_file(tmp_path):
    image = np.ones((20, 20), np.float32)
    image[5, 5] = np.nan
    Image.fromarray(image, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(UnreadableImage, match="nan.tif.*non-finite"):
        load_preprocessed(tmp_path / "nan.tif", 16)
