"""Fine-tuning objectives under DistributedDataParallel train the net in train mode (a one-process gloo group)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from advkit.defenses.finetune import FinetuneMethod
from advkit.models import ModelWrapper, Preprocessing


@pytest.fixture
def one_rank(tmp_path: Path):  # type: ignore[no-untyped-def]
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["pgd", "fast", "trades", "paper-white"])
def test_the_training_forward_runs_in_train_mode_under_ddp(method: str, one_rank: None) -> None:
    """model.unwrapped() wrapped the inner net anew, which switched it to eval: under torchrun, pgd, fast and trades
    trained with BatchNorm frozen on its running statistics (0 batches tracked) and dropout off."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(64, 3))
    model = ModelWrapper(DistributedDataParallel(net), Preprocessing(channels=1, input_size=(4, 4), class_names=("a", "b", "c")))
    model.net.train()  # as each training epoch does
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    tracked = int(net[1].num_batches_tracked)
    FinetuneMethod(method, eps=0.1, **({} if method == "fast" else {"steps": 3})).objective()(model, x, y, np.arange(8), 0)
    assert int(net[1].num_batches_tracked) > tracked and all(m.training for m in net.modules())
