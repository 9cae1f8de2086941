"""The Numba op kernels against the PIL calls they replace (bit for bit) and the level rules."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ipmix_cli.augment import ops as O
from ipmix_cli.augment import policy
from ipmix_cli.augment import reference, rng
from tests._augment_helpers import sample_images, smooth_image

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

SIZES = (32, 17)


def _images():
    for size in SIZES:
        for im in sample_images(size, 6, size):
            yield im


def _odd_images():
    """Non-square and 224 px inputs (odd pixel counts, edge columns and rows of every kind),
    a flat image (one histogram bin) and a two-level one."""
    rs = np.random.default_rng(11)
    yield smooth_image(rs, 31, 37)
    yield rs.integers(0, 256, (37, 31, 3), dtype=np.uint8)
    yield smooth_image(rs, 224)
    yield rs.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    yield np.full((9, 13, 3), 77, np.uint8)
    yield np.where(rs.random((12, 10, 1)) < 0.5, 40, 200).astype(np.uint8).repeat(3, axis=2)


def _table(name, arg):
    """The byte table, and its form, the kernel applies for per-byte op `name` with argument `arg`."""
    row = policy.TABLE[policy.row_id("ipmix", name)]
    i = int(row[policy.COL_FIRST_TABLE] + arg - row[policy.COL_ARG_MIN])
    return O.TABLES.bytes[i], O.TABLES.forms[i]


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
        _same(_run(O.apply_lut3, im, *_table("invert", 0)), ImageOps.invert(pil))
        _same(_run(O.mirror, im), ImageOps.mirror(pil))
        for bits in (1, 2, 3, 4, 8):
            _same(_run(O.apply_lut3, im, *_table("posterize", bits)), ImageOps.posterize(pil, bits))
        for threshold in (256, 200, 77, 0):
            _same(_run(O.apply_lut3, im, *_table("solarize", threshold)), ImageOps.solarize(pil, threshold))
        _same(_run(O.autocontrast, im, 0.0), ImageOps.autocontrast(pil))
        for cutoff in (0.35, 7.3, 9.9):
            _same(_run(O.autocontrast, im, cutoff), ImageOps.autocontrast(pil, cutoff))


def test_table_kernel_computes_and_looks_up_the_same_bytes():
    """apply_lut3 computes a table of mask-and-flip form (every byte table of posterize,
    solarize and invert) and looks any other up: both give lut[c, v] for every table."""
    rs = np.random.default_rng(6)
    images = list(_odd_images())
    for table, form in zip(O.TABLES.bytes, O.TABLES.forms):
        assert form[0] >= 0
        for im in images[:4]:
            expected = table[np.arange(3), im]
            assert np.array_equal(_run(O.apply_lut3, im, table, form), expected)
            assert np.array_equal(_run(O.apply_lut3, im, table, O.NO_FORM), expected)
    for _ in range(5):
        table = rs.integers(0, 256, (3, 256), dtype=np.uint8)
        for im in images:
            assert np.array_equal(_run(O.apply_lut3, im, table, O.NO_FORM), table[np.arange(3), im])


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


@pytest.mark.parametrize("op", range(len(policy.ROWS)))
def test_op_with_level_matches_the_reference_and_regions_agree(op):
    """apply_op (levels drawn in the kernel from its row of the table) equals reference.pil_op
    (the row's Pillow call) drawing from the same stream, and an op restricted to a region
    equals the full op inside it and leaves the rest alone."""
    for severity in (1.0, 3.0, 10.0):
        for i, im in enumerate(sample_images(int(severity), 4, 32)):
            dst = np.zeros_like(im)
            O.apply_op(op, rng.new_state(1, 2, i, 3), severity, im, dst, O.TABLES, 0, 32, 0, 32)
            ref = reference.pil_op(op, Image.fromarray(im), rng.new_state(1, 2, i, 3), severity)
            _same(dst, ref)
            part = np.full_like(im, 7)
            O.apply_op(op, rng.new_state(1, 2, i, 3), severity, im, part, O.TABLES, 5, 21, 3, 30)
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
        O.apply_op(policy.row_id("ipmix", "posterize"), st, 3.0, im, dst, O.TABLES, 0, 32, 0, 32)
        bits = 4 - int(level * 4 / 10)
        assert np.array_equal(dst, im & np.uint8((0xFF << (8 - bits)) & 0xFF))
        dst = np.zeros_like(im)
        O.apply_op(policy.row_id("ipmix", "solarize"), rng.new_state(9, 0, k, 0), 3.0, im, dst, O.TABLES, 0, 32, 0, 32)
        threshold = 256 - int(level * 256 / 10)
        assert np.array_equal(dst, np.where(im < threshold, im, 255 - im))


def test_rotation_table_is_pil_matrix():
    import math

    for deg in range(-O.MAX_ROTATION, O.MAX_ROTATION + 1):
        a, b, d, e = O.ROTATION_TABLE[deg + O.MAX_ROTATION]
        angle = -math.radians(deg % 360.0)
        assert (a, b, d, e) == (round(math.cos(angle), 15), round(math.sin(angle), 15),
                                round(-math.sin(angle), 15), round(math.cos(angle), 15))


# A shear whose row offsets s (y + 0.5) fall just below integers: PIL's rounding then moves the
# sample column by one inside a row, which shear_x must notice (its general path).
_EDGE_SHEAR = float(np.nextafter(2.0, 0.0))
_SHEARS = (-0.3, -0.09, -0.01, 0.02, 0.3, 1.7, _EDGE_SHEAR, -_EDGE_SHEAR)


def test_geometric_ops_identical_to_pil_on_odd_sizes():
    bilinear = Image.BILINEAR
    for im in _odd_images():
        pil = Image.fromarray(im)
        for deg in (-30, -8, -1, 1, 2, 13, 30):
            _same(_run(O.rotate, im, deg, O.ROTATION_TABLE), pil.rotate(deg, resample=bilinear))
        for s in _SHEARS:
            _same(_run(O.shear_x, im, s), pil.transform(pil.size, Image.AFFINE, (1, s, 0, 0, 1, 0), resample=bilinear))
            _same(_run(O.shear_y, im, s), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, s, 1, 0), resample=bilinear))
        h, w = im.shape[:2]
        for t in (-w - 3, -w // 3, 7, w - 1, w + 2):
            _same(_run(O.translate, im, t, 0), pil.transform(pil.size, Image.AFFINE, (1, 0, t, 0, 1, 0), resample=bilinear))
        for t in (-h, -5, h // 3, h + 1):
            _same(_run(O.translate, im, 0, t), pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, t), resample=bilinear))


def test_general_affine_identical_to_pil_on_odd_sizes():
    """Scaled, flipped and degenerate matrices: rows wholly outside, wholly inside, a constant
    coordinate along a row (a zero coefficient) and columns sampled backwards."""
    rs = np.random.default_rng(6)
    mats = [(0.5, 0.1, 3.3, -0.1, 0.5, 2.7), (-1.0, 0.0, 30.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
            (1.0, 0.0, 0.25, 0.0, -1.0, 30.5), (2.0, 0.3, -20.0, -0.2, 1.5, -9.0), (1.0, 0.0, 1e4, 0.0, 1.0, 0.0)]
    for im in _odd_images():
        pil = Image.fromarray(im)
        h, w = im.shape[:2]
        for m in mats + [tuple(float(v) for v in rs.uniform(-1.5, 1.5, 6) * (1, 1, w, 1, 1, h))]:
            _same(_run(O.affine_bilinear, im, *m), pil.transform(pil.size, Image.AFFINE, m, resample=Image.BILINEAR))


def test_point_and_enhance_ops_identical_to_pil_on_odd_sizes():
    for im in _odd_images():
        pil = Image.fromarray(im)
        _same(_run(O.equalize, im), ImageOps.equalize(pil))
        _same(_run(O.apply_lut3, im, *_table("invert", 0)), ImageOps.invert(pil))
        _same(_run(O.mirror, im), ImageOps.mirror(pil))
        for bits in (1, 4, 8):
            _same(_run(O.apply_lut3, im, *_table("posterize", bits)), ImageOps.posterize(pil, bits))
        for threshold in (256, 255, 128, 1, 0):
            _same(_run(O.apply_lut3, im, *_table("solarize", threshold)), ImageOps.solarize(pil, threshold))
        for cutoff in (0.0, 2.5):
            _same(_run(O.autocontrast, im, cutoff), ImageOps.autocontrast(pil, cutoff))
        for factor in (0.1, 0.7, 1.9):
            _same(_run(O.color, im, factor), ImageEnhance.Color(pil).enhance(factor))
            _same(_run(O.contrast, im, factor), ImageEnhance.Contrast(pil).enhance(factor))
            _same(_run(O.brightness, im, factor), ImageEnhance.Brightness(pil).enhance(factor))
            _same(_run(O.sharpness, im, factor), ImageEnhance.Sharpness(pil).enhance(factor))


def test_histograms_count_every_channel():
    for im in _odd_images():
        for c in range(3):
            assert np.array_equal(O.histograms(im)[c], np.bincount(im[..., c].ravel(), minlength=256))


_KERNELS = [
    (O.equalize, ()), (O.apply_lut3, _table("invert", 0)), (O.mirror, ()),
    (O.apply_lut3, _table("posterize", 3)), (O.apply_lut3, _table("solarize", 100)),
    (O.apply_lut3, _table("solarize", 256)), (O.apply_lut3, (_table("solarize", 100)[0], O.NO_FORM)),
    (O.autocontrast, (1.5,)), (O.color, (1.6,)), (O.contrast, (0.4,)),
    (O.brightness, (1.3,)), (O.sharpness, (1.9,)), (O.sharpness, (0.3,)),
    (O.rotate, (-13, O.ROTATION_TABLE)), (O.rotate, (29, O.ROTATION_TABLE)), (O.rotate, (0, O.ROTATION_TABLE)),
    (O.shear_x, (0.27,)), (O.shear_x, (-0.05,)), (O.shear_x, (_EDGE_SHEAR,)), (O.shear_y, (-0.3,)),
    (O.shear_y, (0.08,)), (O.translate, (-9, 0)), (O.translate, (5, 0)), (O.translate, (0, 7)),
    (O.translate, (0, -40)), (O.affine_bilinear, (0.9, 0.2, 2.5, -0.3, 1.1, 1.5)),
]


def _regions(h, w, rs):
    """Sub-rectangles: narrow and wide, touching each edge, full-width bands, single pixels."""
    yield 0, h, 0, w
    yield 0, h, 0, 1
    yield 0, 1, 0, w
    yield h - 1, h, w - 1, w
    yield 3, h - 2, 0, w
    yield 0, h // 2, w - 7, w
    yield 2, h, 1, 9
    yield 5, 6, 2, w - 3
    for _ in range(6):
        r0, c0 = int(rs.integers(0, h)), int(rs.integers(0, w))
        yield r0, int(rs.integers(r0 + 1, h + 1)), c0, int(rs.integers(c0 + 1, w + 1))


def test_ops_on_regions_equal_the_full_op_inside_and_leave_the_rest():
    rs = np.random.default_rng(3)
    for im in _odd_images():
        h, w = im.shape[:2]
        regions = list(_regions(h, w, rs))
        for kernel, args in _KERNELS:
            full = _run(kernel, im, *args)
            for r0, r1, c0, c1 in regions:
                part = np.full_like(im, 7)
                kernel(im, part, *args, r0, r1, c0, c1)
                assert np.array_equal(part[r0:r1, c0:c1], full[r0:r1, c0:c1]), (kernel, args, (r0, r1, c0, c1))
                part[r0:r1, c0:c1] = 7
                assert (part == 7).all(), (kernel, args, (r0, r1, c0, c1))


def test_span_is_the_exact_column_range_of_the_float_predicate():
    """The bilinear kernels' row split: [a, b) must be exactly the columns where
    lo <= k (x + 0.5) + base + add - sub < hi in double arithmetic, boundary ties included."""
    rs = np.random.default_rng(8)
    for i in range(3000):
        w = int(rs.integers(1, 60))
        c0 = int(rs.integers(0, w))
        c1 = int(rs.integers(c0, w + 1))
        k = float(rs.choice([rs.uniform(-2, 2), 1.0, -1.0, 1 / 3, -0.1 * rs.integers(1, 20), 0.0, 1e-17]))
        x_at = float(rs.integers(-5, w + 5))  # make the boundary fall on (or next to) a column
        base = float(rs.choice([rs.uniform(-w, w), -k * (x_at + 0.5), -k * (x_at + 0.5) + 1e-15]))
        add = float(rs.choice([0.0, rs.uniform(-3, 3), 2 / 3]))
        sub = float(rs.choice([0.0, 0.5]))
        lo = 0.0
        hi = float(rs.choice([w, w - 1, 0.5]))
        a, b = O._span(k, base, add, sub, lo, hi, c0, c1)
        inside = [x for x in range(c0, c1) if lo <= k * (x + 0.5) + base + add - sub < hi]
        assert (list(range(a, b)) == inside) and c0 <= a <= b <= c1, (i, k, base, add, sub, hi, c0, c1, a, b)


def _autocontrast_images():
    """Varied histograms: photo-like and noise, odd sizes, flat (one value), two-level, one flat
    channel, three close levels, rare outliers, a single pixel."""
    rs = np.random.default_rng(12)
    yield from sample_images(4, 4, 32)
    yield from _odd_images()
    yield np.zeros((32, 32, 3), np.uint8)
    yield np.full((32, 32, 3), 255, np.uint8)
    one_flat = smooth_image(rs, 32)
    one_flat[..., 1] = 128
    yield one_flat
    yield (100 + rs.integers(0, 3, (32, 32, 3))).astype(np.uint8)
    yield np.where(rs.random((32, 32, 3)) < 0.01, 255, 3).astype(np.uint8)
    yield rs.integers(0, 256, (1, 1, 3), dtype=np.uint8)


def test_augmix_autocontrast_row_is_pillows_plain_autocontrast():
    """AugMix's and PixMix's autocontrast row (cutoff 0, level unused) run by apply_op equals
    `ImageOps.autocontrast(img)` byte for byte; IPMix's row (cutoff 10 - level) is another op."""
    differs = 0
    for i, im in enumerate(_autocontrast_images()):
        h, w = im.shape[:2]
        expected = np.asarray(ImageOps.autocontrast(Image.fromarray(im)))
        for severity in (0.5, 3.0, 10.0):
            dst = np.zeros_like(im)
            O.apply_op(policy.PLAIN_AUTOCONTRAST, rng.new_state(4, 0, i, 0), severity, im, dst,
                       O.TABLES, 0, h, 0, w)
            _same(dst, expected)
            clipped = np.zeros_like(im)
            O.apply_op(policy.IPMIX_AUTOCONTRAST, rng.new_state(4, 0, i, 0), severity, im, clipped,
                       O.TABLES, 0, h, 0, w)
            differs += not np.array_equal(clipped, expected)
    assert differs >= 10
