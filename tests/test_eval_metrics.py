import math

import numpy as np
import pytest
import torch

from ipmix_cli.eval.evaluate import pgd_attack, score
from ipmix_cli.eval.metrics import corruption_summary, error_rate, rms_calibration_error
from ipmix_cli.train.models import build_model, normalisation


def test_rms_calibration_single_bin_by_hand():
    # mean confidence 0.7667, accuracy 0.6667 → gap 0.1
    assert rms_calibration_error([0.9, 0.6, 0.8], [1, 0, 1]) == pytest.approx(0.1)
    assert rms_calibration_error([1.0] * 5, [1] * 5) == 0.0


def test_rms_calibration_adaptive_bins_include_the_last_bin():
    # Bins of 2 over 5 samples (after sorting): [0.1, 0.2] acc 0, then [0.6, 0.7, 0.9] (the
    # remainder joins the last bin) acc 2/3. Given shuffled to check the sort.
    conf = [0.7, 0.1, 0.9, 0.2, 0.6]
    correct = [1, 0, 1, 0, 0]
    gap1, gap2 = 0.15, (0.6 + 0.7 + 0.9) / 3 - 2 / 3
    expected = math.sqrt(2 / 5 * gap1 ** 2 + 3 / 5 * gap2 ** 2)
    assert rms_calibration_error(conf, correct, bin_size=2) == pytest.approx(expected)
    # The reference code would drop the last bin and report sqrt(2/5 · gap1²): we do not.
    assert rms_calibration_error(conf, correct, bin_size=2) != pytest.approx(math.sqrt(2 / 5 * gap1 ** 2))


def test_rms_calibration_bins_of_100():
    conf = np.r_[np.full(100, 0.2), np.full(150, 0.9)]
    correct = np.r_[np.zeros(100), np.ones(100), np.zeros(50)]
    expected = math.sqrt(100 / 250 * 0.2 ** 2 + 150 / 250 * (0.9 - 100 / 150) ** 2)
    assert rms_calibration_error(conf, correct) == pytest.approx(expected)


def test_error_rate_and_corruption_summary():
    assert error_rate([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    s = corruption_summary({"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.0, 0.0, 0.0, 0.0, 0.5]})
    assert s["per_corruption"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.1)}
    assert s["error"] == pytest.approx(0.2)  # plain mean over corruptions


def test_corruption_summary_orders_like_the_benchmark_and_keeps_extras_apart():
    from ipmix_cli.eval.corruptions import ALEXNET_ERRORS, BENCHMARK

    errors = {"saturate": [0.9] * 5, "zoom_blur": [0.3] * 5, "gaussian_noise": [0.1, 0.2, 0.3, 0.4, 0.5],
              "brightness": [0.2] * 5, "speckle_noise": [0.7] * 5}
    s = corruption_summary(errors, normalise_by=ALEXNET_ERRORS)
    assert list(s["per_corruption"]) == ["gaussian_noise", "zoom_blur", "brightness", "speckle_noise", "saturate"]
    assert s["benchmark_corruptions"] == ["gaussian_noise", "zoom_blur", "brightness"]
    assert s["error"] == pytest.approx((0.3 + 0.3 + 0.2) / 3)  # the extras do not count
    assert s["extra_error"] == pytest.approx(0.8)
    assert s["mce_normalised"] == pytest.approx((0.3 / 0.886428 + 0.3 / 0.798360 + 0.2 / 0.564592) / 3)
    # AlexNet's own errors give an mCE of exactly 100 %
    alexnet = corruption_summary({n: [ALEXNET_ERRORS[n]] * 5 for n in BENCHMARK}, normalise_by=ALEXNET_ERRORS)
    assert alexnet["mce_normalised"] == pytest.approx(1.0) and "mce_normalised" not in corruption_summary(errors)


def test_score_from_probabilities():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    s = score(probs, labels)
    assert s["error"] == 0.25 and s["samples"] == 4
    assert s["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.7, 0.4, 0.8])))
    assert s["rms_calibration_error"] == pytest.approx(abs(np.mean([0.9, 0.7, 0.6, 0.8]) - 0.75))


def test_pgd_stays_in_the_epsilon_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, 32).eval()
    mean, std = normalisation(32)
    x = torch.rand(6, 3, 32, 32)
    y = torch.arange(6)
    gen = torch.Generator().manual_seed(0)
    eps = 2 / 255
    adv = pgd_attack(model, x, y, mean, std, generator=gen)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        clean_loss = torch.nn.functional.cross_entropy(model((x - m) / s), y)
        adv_loss = torch.nn.functional.cross_entropy(model((adv - m) / s), y)
    assert adv_loss > clean_loss
    again = pgd_attack(model, x, y, mean, std, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adv, again)
