"""ipmix's corruptions held against the `imagecorruptions` package (ImageNet-C's definitions and
severities) on the same images: identical where the definition draws no random numbers, the
same distribution of the per-image change where it does.

The package predates NumPy 2 and scikit-image's `channel_axis`; `load_reference` adapts those
two names for it and changes nothing else.
"""

import numpy as np
import pytest

from ipmix_cli.eval.corruptions import corrupt_image
from ipmix_cli.eval.corruptions.ops import frost_folder, motion_smear
from ipmix_cli.eval.corruptions.reference import load_reference
from tests._augment_helpers import smooth_image

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def _images(n, side, seed=1):
    rs = np.random.default_rng(seed)
    return [smooth_image(rs, side) for _ in range(n)]


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "brightness",
                                  "saturate", "jpeg_compression", "pixelate"])
def test_deterministic_corruptions_equal_the_reference(reference, name):
    for i, x in enumerate(_images(2, 224)):
        for severity in range(1, 6):
            ours = corrupt_image(x, name, severity, 0, i, "imagenet")
            ref = reference(x, severity, name)
            diff = np.abs(ours.astype(int) - ref)
            # defocus: SciPy's and OpenCV's float sums may land either side of a whole grey
            # level; a handful of pixels per image then differ by one.
            assert diff.max() <= (1 if name == "defocus_blur" else 0), (name, severity)
            assert (diff == 0).mean() >= 0.9999, (name, severity)


def test_motion_smear_equals_the_reference_for_any_angle(reference):
    from imagecorruptions.corruptions import _motion_blur  # the package's kernel, as it is

    x = _images(1, 64)[0]
    for radius, sigma, angle in ((10, 3, -40.0), (15, 8, 12.5), (20, 15, 44.0), (12, 4, -100.0)):
        # the same taps and shifts; weights normalised in another order differ in the last bit
        np.testing.assert_allclose(motion_smear(x, radius, sigma, angle), _motion_blur(x, radius, sigma, angle),
                                   rtol=1e-12, atol=1e-10)


# Mean and standard deviation of the per-image mean absolute change, over 8 images x 2 draws
# (x 8 for frost, whose change depends mostly on which of five textures is drawn):
# ours within 12 % of the reference's mean (or half its spread, or a quarter grey level),
# spreads within 2x.
@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
                                  "motion_blur", "snow", "frost", "fog", "spatter"])
def test_random_corruptions_change_images_as_much_as_the_reference(reference, name):
    side = 96 if name == "glass_blur" else 224  # the reference's glass blur is a Python loop
    images = _images(8, side)
    for severity in range(1, 6):
        ours, ref = [], []
        for i in range((8 if name == "frost" else 2) * len(images)):
            x = images[i % len(images)]
            np.random.seed(i)
            ref.append(np.abs(reference(x, severity, name).astype(float) - x).mean())
            ours.append(np.abs(corrupt_image(x, name, severity, 0, i, "imagenet").astype(float) - x).mean())
        m_ours, m_ref, s_ours, s_ref = np.mean(ours), np.mean(ref), np.std(ours), np.std(ref)
        assert abs(m_ours - m_ref) <= max(0.12 * m_ref, 0.5 * s_ref, 0.25), (name, severity, m_ours, m_ref)
        assert s_ours <= 2 * s_ref + 0.5 and s_ref <= 2 * s_ours + 0.5, (name, severity, s_ours, s_ref)


def test_frost_reads_the_reference_textures_or_says_so(reference, tmp_path):
    import os
    import subprocess
    import sys

    assert (frost_folder() / "frost1.png").is_file()
    # An imagecorruptions without its frost pictures first on the path: one line naming the
    # package, exit 1, nothing written (no look-alike texture is substituted).
    shadow = tmp_path / "shadow" / "imagecorruptions"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.getcwd()])}
    out = tmp_path / "c"
    done = subprocess.run([sys.executable, "-m", "ipmix_cli", "corrupt", "--source", "digits:test", "--out", str(out),
                           "--limit", "2", "--corruptions", "frost"], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: frost needs the frost pictures of the imagecorruptions package")
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_bench_corrupt_prints_one_json_object_in_the_benchmark_order(capsys):
    import json

    from ipmix_cli.cli.main import run

    assert run(["bench", "corrupt", "--size", "32", "--images", "1", "--repeats", "1",
                "--corruptions", "contrast,glass_blur,gaussian_noise", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    rows = figures["corruptions"]
    assert [r["corruption"] for r in rows] == ["gaussian_noise", "glass_blur", "contrast"]
    assert figures["baseline"].startswith("imagecorruptions") and figures["cores"] == 1
    for r in rows:
        assert r["ratio"] == pytest.approx(r["reference_ms_per_image"] / r["ipmix_ms_per_image"], rel=0.05)
