"""The Numba op kernels against the PIL calls they replace (bit for bit) and the level rules."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ipmix_cli.augment import ops as O
from ipmix_cli.augment import reference, rng
from tests._augment_helpers import sample_images

SIZES = (32, 17)


def _images():
    for size in SIZES:
        for im in sample_images(size, 6, size):
            yield im


def _run(kernel, src, *args):
    dst = np.zeros_like(src)
    kernel(src, dst, *args, 0, src.shape[0], 0, src.shape[1])
    return dst


def _same(ours, pil_image):
    theirs = np.asarray(pil_image)
    assert ours.shape == theirs.shape
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() == 0, f"{(diff > 0).mean():.4f} of values differ, max {diff.max()}"


def test_point_ops_identical_to_pil():
    for im in _images():
        pil = Image.fromarray(im)
        _same(_run(O.equalize, im), ImageOps.equalize(pil))
        _same(_run(O.invert, im), ImageOps.invert(pil))
        _same(_run(O.mirror, im), ImageOps.mirror(pil))
        for bits in (1, 2, 3, 4):
            _same(_run(O.posterize, im, bits), ImageOps.posterize(pil, bits))
        for threshold in (256, 200, 77, 0):
            _same(_run(O.solarize, im, threshold), ImageOps.solarize(pil, threshold))
        _same(_run(O.autocontrast, im, 0.0), ImageOps.autocontrast(pil))
        for cutoff in (0.35, 7.3, 9.9):
            _same(_run(O.autocontrast, im, cutoff), ImageOps.autocontrast(pil, cutoff))


def test_enhance_ops_identical_to_pil():
    for im in _images():
        pil = Image.fromarray(im)
        for factor in (0.1, 0.64, 1.0, 1.9):
            _same(_run(O.color, im, factor), ImageEnhance.Color(pil).enhance(factor))
            _same(_run(O.contrast, im, factor), ImageEnhance.Contrast(pil).enhance(factor))
            _same(_run(O.brightness, im, factor), ImageEnhance.Brightness(pil).enhance(factor))
            _same(_run(O.sharpness, im, factor), ImageEnhance.Sharpness(pil).enhance(factor))


def test_geometric_ops_identical_to_pil():
    bilinear = Image.BILINEAR
    for im in _images():
        pil = Image.fromarray(im)
        for deg in (-30, -17, -2, -1, 0, 1, 9, 29):
            _same(_run(O.rotate, im, deg, O.ROTATION_TABLE), pil.rotate(deg, resample=bilinear))
        for s in (-0.3, -0.047, 0.003, 0.21):
            _same(_run(O.shear_x, im, s), pil.transform(pil.size, Image.AFFINE, (1, s, 0, 0, 1, 0), resample=bilinear))
            _same(_run(O.shear_y, im, s), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, s, 1, 0), resample=bilinear))
            _same(_run(O.affine_bilinear, im, 1.0, s, 0.0, 0.0, 1.0, 0.0),
                  pil.transform(pil.size, Image.AFFINE, (1, s, 0, 0, 1, 0), resample=bilinear))
        for t in (-12, -3, 0, 5, 16):
            _same(_run(O.translate, im, t, 0), pil.transform(pil.size, Image.AFFINE, (1, 0, t, 0, 1, 0), resample=bilinear))
            _same(_run(O.translate, im, 0, t), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, t), resample=bilinear))


def test_general_affine_identical_to_pil():
    rs = np.random.default_rng(5)
    for im in _images():
        pil = Image.fromarray(im)
        m = tuple(float(v) for v in rs.uniform(-1.5, 1.5, 6))
        _same(_run(O.affine_bilinear, im, *m), pil.transform(pil.size, Image.AFFINE, m, resample=Image.BILINEAR))


@pytest.mark.parametrize("name", O.ALL_OPS)
def test_op_with_level_matches_the_reference_and_regions_agree(name):
    """apply_op (levels drawn in the kernel) equals reference.pil_op drawing from the same stream,
    and an op restricted to a region equals the full op inside it and leaves the rest alone."""
    op = O.OP_IDS[name]
    for severity in (1.0, 3.0, 10.0):
        for i, im in enumerate(sample_images(int(severity), 4, 32)):
            dst = np.zeros_like(im)
            O.apply_op(op, rng.new_state(1, 2, i, 3), severity, im, dst, O.ROTATION_TABLE, 0, 32, 0, 32)
            ref = reference.pil_op(name, Image.fromarray(im), rng.new_state(1, 2, i, 3), severity)
            _same(dst, ref)
            part = np.full_like(im, 7)
            O.apply_op(op, rng.new_state(1, 2, i, 3), severity, im, part, O.ROTATION_TABLE, 5, 21, 3, 30)
            assert np.array_equal(part[5:21, 3:30], dst[5:21, 3:30])
            part[5:21, 3:30] = 7
            assert (part == 7).all()


def test_level_rules_follow_the_spec():
    # level ~ U(0.1, severity); magnitudes as in the spec's table, checked through the op output.
    im = sample_images(3, 1, 32)[0]
    for k in range(200):
        st = rng.new_state(9, 0, k, 0)
        level = 0.1 + rng.uniform(rng.new_state(9, 0, k, 0)) * (3.0 - 0.1)
        assert 0.1 <= level < 3.0
        dst = np.zeros_like(im)
        O.apply_op(O.POSTERIZE, st, 3.0, im, dst, O.ROTATION_TABLE, 0, 32, 0, 32)
        bits = 4 - int(level * 4 / 10)
        assert np.array_equal(dst, im & np.uint8((0xFF << (8 - bits)) & 0xFF))
        dst = np.zeros_like(im)
        O.apply_op(O.SOLARIZE, rng.new_state(9, 0, k, 0), 3.0, im, dst, O.ROTATION_TABLE, 0, 32, 0, 32)
        threshold = 256 - int(level * 256 / 10)
        assert np.array_equal(dst, np.where(im < threshold, im, 255 - im))


def test_rotation_table_is_pil_matrix():
    import math

    for deg in range(-O.MAX_ROTATION, O.MAX_ROTATION + 1):
        a, b, d, e = O.ROTATION_TABLE[deg + O.MAX_ROTATION]
        angle = -math.radians(deg % 360.0)
        assert (a, b, d, e) == (round(math.cos(angle), 15), round(math.sin(angle), 15),
                                round(-math.sin(angle), 15), round(math.cos(angle), 15))
