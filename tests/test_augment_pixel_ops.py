"""P-level mixing ops against straightforward NumPy formulas; clip vs wrap; patch geometry."""

import numpy as np
import pytest

from ipmix_cli.augment import pixel_ops as P
from ipmix_cli.augment import rng
from tests._augment_helpers import sample_images

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _expected_uint8(q, overflow):
    if overflow == P.OVERFLOW_CLIP:
        return (np.clip(q, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    t = np.trunc(q * 255.0)
    return np.mod(t, 256.0).astype(np.uint8)


def _check_formulas(img1, img2, boxes, beta_param, seed):
    """add and multiply, clip and wrap, on each box: the kernel against the NumPy formulas."""
    for op in (P.ADD, P.MULTIPLY):
        for overflow in (P.OVERFLOW_CLIP, P.OVERFLOW_WRAP):
            for k, (top, left, h, w) in enumerate(boxes):
                st = rng.new_state(seed, 0, k, 2 + op)
                a, b = rng.get_ab(st.copy(), beta_param)
                out = img1.copy()
                P.mix_patch(out, img2, op, st, beta_param, overflow, top, left, h, w)
                p1 = img1[top:top + h, left:left + w] / 255.0
                p2 = img2[top:top + h, left:left + w] / 255.0
                if op == P.ADD:
                    q = ((2 * p1 - 1) * a + (2 * p2 - 1) * b + 1) / 2
                else:
                    q = ((2 * p1) ** a) * (np.maximum(2 * p2, 1e-37) ** b) / 2
                expected = img1.copy()
                expected[top:top + h, left:left + w] = _expected_uint8(q, overflow)
                assert np.array_equal(out, expected), (op, overflow, k)


def test_add_and_multiply_match_numpy_formulas_small_and_large_patches():
    img1, img2 = sample_images(11, 2, 32)
    _check_formulas(img1, img2, [(3, 5, 4, 4), (0, 0, 32, 32), (10, 2, 2, 17), (1, 1, 30, 20)], 3.0, 4)


def test_random_pixels_and_elements_take_the_mask_from_the_stream():
    img1, img2 = sample_images(12, 2, 32)
    top, left, h, w = 4, 6, 9, 13
    for op, shape in ((P.RANDOM_PIXELS, (h, w, 1)), (P.RANDOM_ELEMENTS, (h, w, 3))):
        st = rng.new_state(5, 1, 2, 3)
        probe = st.copy()
        p = rng.uniform(probe)
        keep = rng.uniform_array(probe, int(np.prod(shape))).reshape(shape) < p
        out = img1.copy()
        P.mix_patch(out, img2, op, st, 3.0, P.OVERFLOW_CLIP, top, left, h, w)
        expected = img1.copy()
        box = (slice(top, top + h), slice(left, left + w))
        expected[box] = np.where(keep, img1[box], img2[box])
        assert np.array_equal(out, expected)
        if op == P.RANDOM_PIXELS:
            # one mask for the three channels: a pixel is wholly from one image
            from_1 = (out[box] == img1[box]).all(axis=2)
            from_2 = (out[box] == img2[box]).all(axis=2)
            assert (from_1 | from_2).all()


def test_clip_and_wrap_conversions():
    values = [-0.2, 0.0, 0.5, 0.999, 1.0, 1.3, 2.5, float("inf"), float("nan")]
    clipped = [int(P.to_uint8(v, P.OVERFLOW_CLIP)) for v in values[:-2]]
    assert clipped == [0, 0, 128, 255, 255, 255, 255]
    wrapped = [int(P.to_uint8(v, P.OVERFLOW_WRAP)) for v in values]
    # truncation toward zero, then modulo 256 (what a float->uint8 tensor cast does)
    assert wrapped == [205, 0, 127, 254, 255, 75, 125, 0, 0]


def test_wrap_differs_from_clip_exactly_where_values_leave_the_range():
    img1, img2 = sample_images(13, 2, 32)
    for k in range(40):
        st = rng.new_state(6, 0, k, 0)
        a, b = rng.get_ab(st.copy(), 3.0)
        p1, p2 = img1 / 255.0, img2 / 255.0
        q = ((2 * p1 - 1) * a + (2 * p2 - 1) * b + 1) / 2
        clip, wrap = img1.copy(), img1.copy()
        P.mix_patch(clip, img2, P.ADD, st.copy(), 3.0, P.OVERFLOW_CLIP, 0, 0, 32, 32)
        P.mix_patch(wrap, img2, P.ADD, st.copy(), 3.0, P.OVERFLOW_WRAP, 0, 0, 32, 32)
        inside = (q >= 0) & (q <= 1)
        assert (clip[~inside] == np.where(q[~inside] < 0, 0, 255)).all()
        over = q * 255 >= 256
        if over.any():
            assert (wrap[over] == np.mod(np.trunc(q[over] * 255), 256)).all()
            assert (wrap[over] != 255).any()
        assert np.abs(wrap[inside].astype(int) - clip[inside].astype(int)).max(initial=0) <= 1


def test_patch_geometry():
    S, s = 32, 16
    st = rng.new_state(7, 0, 0, 0)
    squares, widths, heights, lefts = 0, set(), set(), set()
    n = 4000
    for _ in range(n):
        top, left, h, w = P.draw_patch(st, S, s)
        assert 0 <= left <= S - s and 0 <= top <= S - s
        assert 2 <= h <= s and 2 <= w <= s
        lefts.add(left)
        if h == s and w == s:
            squares += 1
        else:
            widths.add(w)
            heights.add(h)
    assert abs(squares / n - (0.5 + 0.5 / (s - 1) ** 2)) < 0.03
    assert widths == set(range(2, s + 1)) and heights == set(range(2, s + 1))
    assert lefts == set(range(0, S - s + 1))
    # a patch as large as the image sits at the origin
    for _ in range(50):
        top, left, h, w = P.draw_patch(st, S, S)
        assert top == 0 and left == 0


def test_large_patches_go_through_the_pair_table_with_the_same_bytes():
    # the whole 96 x 96 image goes through the table of all byte pairs, the 90 x 60 patch
    # (just below the threshold) through the per-byte tables
    img1, img2 = sample_images(14, 2, 96)
    assert 90 * 60 * 3 < P.PAIR_TABLE_MIN <= 96 * 96 * 3
    _check_formulas(img1, img2, [(0, 0, 96, 96), (5, 3, 90, 60)], 4.0, 7)


def test_random_masks_leave_the_stream_where_the_draws_end():
    img1, img2 = sample_images(15, 2, 64)
    for op, per in ((P.RANDOM_PIXELS, 1), (P.RANDOM_ELEMENTS, 3)):
        st = rng.new_state(8, 0, 1, op)
        probe = st.copy()
        rng.uniform_array(probe, 1 + 50 * 40 * per)
        P.mix_patch(img1.copy(), img2, op, st, 3.0, P.OVERFLOW_CLIP, 7, 11, 50, 40)
        assert st[0] == probe[0]
        assert rng.uniform(st) == rng.uniform(probe)
