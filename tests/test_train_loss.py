import math

import pytest
import torch

from ipmix_cli.train.losses import jsd_consistency, jsd_loss
from ipmix_cli.train.loop import cosine_factor, resolve_precision
from ipmix_cli.common.errors import IpmixError


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _hand_jsd(rows):
    """JS divergence among three distributions, written out term by term."""
    p = [_softmax(r) for r in rows]
    m = [max(1e-7, min(1.0, sum(q[k] for q in p) / 3)) for k in range(len(p[0]))]
    return sum(sum(q[k] * (math.log(q[k]) - math.log(m[k])) for k in range(len(m))) for q in p) / 3


def test_jsd_matches_a_hand_computation():
    clean = [[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]]
    aug1 = [[1.0, 1.0, 0.0], [1.5, -2.0, 0.5]]
    aug2 = [[-1.0, 2.0, 0.3], [0.2, 0.1, 2.5]]
    expected = sum(_hand_jsd([clean[i], aug1[i], aug2[i]]) for i in range(2)) / 2
    got = jsd_consistency(torch.tensor(clean), torch.tensor(aug1), torch.tensor(aug2))
    assert got.item() == pytest.approx(expected, rel=1e-6)

    labels = torch.tensor([0, 2])
    ce = -(math.log(_softmax(clean[0])[0]) + math.log(_softmax(clean[1])[2])) / 2
    loss, clean_logits = jsd_loss(torch.tensor(clean + aug1 + aug2), labels, weight=12.0)
    assert loss.item() == pytest.approx(ce + 12 * expected, rel=1e-6)
    assert torch.equal(clean_logits, torch.tensor(clean))


def test_jsd_is_zero_for_identical_views_and_the_mixture_is_clamped():
    z = torch.tensor([[50.0, -50.0, 0.0]])
    assert jsd_consistency(z, z, z).item() == pytest.approx(0.0, abs=1e-7)
    # Mixture probabilities below 1e-7 are clamped: the loss stays finite for saturated outputs.
    far = torch.tensor([[-50.0, 50.0, 0.0]])
    assert torch.isfinite(jsd_consistency(z, far, z))


def test_cosine_schedule_per_step():
    assert cosine_factor(0, 100) == pytest.approx(1.0)
    assert cosine_factor(50, 100) == pytest.approx(0.5, abs=1e-6)
    assert cosine_factor(100, 100) == pytest.approx(1e-6)
    assert cosine_factor(150, 100) == pytest.approx(1e-6)
    values = [cosine_factor(s, 10) for s in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_precision_choices_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(IpmixError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", cpu)
