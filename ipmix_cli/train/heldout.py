"""A test set scored at each epoch's end (`--test`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.train.models import to_model_input
from ipmix_cli.train.ranks import sum_across_ranks


class HeldOut:
    """A test source scored at epoch ends; each rank scores every world-th sample."""

    def __init__(self, spec: str, image_size: int, num_classes: int, classes, rank: int, world: int):
        from ipmix_cli.data.sources import open_source
        from ipmix_cli.data.testset import check_classes

        self.source = open_source(spec)
        if len(self.source.classes) != num_classes:
            raise IpmixError(f"test set {spec} has {len(self.source.classes)} classes; the shards have {num_classes}")
        check_classes(self.source.classes, classes, spec)
        self.spec, self.size = spec, image_size
        self.indices = np.arange(len(self.source))[rank::world]

    @torch.no_grad()
    def score(self, net, dev, mean, std, amp_dtype, channels_last, batch_size: int = 256) -> dict:
        from ipmix_cli.data.testset import bad_test_image_error
        from ipmix_cli.data.testset import iter_test_batches

        was_training = net.training
        net.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        with bad_test_image_error():
            for images, labels in iter_test_batches(self.source, self.size, batch_size, self.indices):
                x = to_model_input(torch.from_numpy(images).permute(0, 3, 1, 2)[:, None], dev, mean, std,
                                   channels_last)
                y = torch.from_numpy(labels).to(dev)
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = net(x).float()
                sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                     (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(len(y), device=dev).double()])
        net.train(was_training)
        loss, correct, n = sum_across_ranks(sums)
        return {"test_loss": loss / n, "test_acc": correct / n, "test_error": 1 - correct / n}
