"""RUN/model.pt + RUN/model.json: weights a user takes elsewhere, rebuilt by load_trained and
scored by `ipmix eval` exactly as the full checkpoint is."""

import json

import pytest
import torch

from _torchvision_resnet import torchvision_resnet_state_shapes
from _train_helpers import make_digit_shards
from ipmix_cli.train.checkpoint import load_checkpoint
from ipmix_cli.cli.main import run
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.eval.evaluate import evaluate
from ipmix_cli.train.models import load_trained
from ipmix_cli.train.loop import train

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    make_digit_shards(root / "s", views=1, epochs=1, shards=2, limit=16)
    train(str(root / "s"), "resnet50", 1, root / "run", batch_size=4, num_workers=0, max_steps=2,
          echo=lambda *a: None)
    return root / "run"


def test_model_pt_is_a_plain_torchvision_named_state_dict(resnet50_run):
    state = torch.load(resnet50_run / "model.pt", weights_only=True)
    assert [(k, tuple(v.shape)) for k, v in state.items()] == torchvision_resnet_state_shapes((3, 4, 6, 3), 4, 10)
    assert not any(k.startswith("module.") for k in state)
    # The same weights as the training checkpoint written at the same moment.
    ckpt = load_checkpoint(resnet50_run)["model"]
    assert all(torch.equal(state[k], ckpt[k]) for k in ckpt)
    info = json.loads((resnet50_run / "model.json").read_text())
    assert info["model"] == "resnet50" and info["num_classes"] == 10 and info["input_size"] == [3, 32, 32]
    assert info["mean"] == [0.5] * 3 and info["std"] == [0.5] * 3 and len(info["classes"]) == 10


def test_load_trained_rebuilds_the_network_in_one_call(resnet50_run):
    net, info = load_trained(resnet50_run)
    same, _ = load_trained(resnet50_run / "model.pt")
    assert not net.training and info["model"] == "resnet50"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), same(x))
    ckpt = load_checkpoint(resnet50_run)["model"]
    assert all(torch.equal(net.state_dict()[k], ckpt[k]) for k in ckpt)


def test_eval_scores_model_pt_as_it_scores_the_checkpoint(resnet50_run, capsys):
    by_checkpoint = evaluate(resnet50_run / "checkpoint.pt", "digits:test", limit=24, device="cpu")
    by_weights = evaluate(resnet50_run / "model.pt", "digits:test", limit=24, device="cpu")
    assert by_weights["clean"] == by_checkpoint["clean"] and by_weights["model"] == "resnet50"
    assert run(["eval", "--checkpoint", str(resnet50_run), "--test", "digits:test", "--limit", "24",
                "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] == by_checkpoint["clean"]


def test_weights_without_their_description_or_of_another_shape_are_one_line(resnet50_run, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.pt").write_bytes((resnet50_run / "model.pt").read_bytes())
    with pytest.raises(IpmixError, match="no model.json"):
        load_trained(lone)
    info = json.loads((resnet50_run / "model.json").read_text())
    (lone / "model.json").write_text(json.dumps({**info, "model": "resnet18"}))
    with pytest.raises(IpmixError, match="do not fit the network"):
        load_trained(lone)
