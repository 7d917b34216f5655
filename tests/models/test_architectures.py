"""Conformance of every registered architecture: builds, right output shape, trains a step, round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from advkit.models import Preprocessing, architecture_names, create_architecture, load_checkpoint, save_checkpoint

SIZES = {"small-cnn": 28}


@pytest.mark.parametrize("name", architecture_names())
def test_architecture_conformance(name: str, tmp_path: Path) -> None:
    size = SIZES.get(name, 32)
    channels = 1 if name == "small-cnn" else 3
    kwargs = {"num_classes": 7, "in_channels": channels, "input_size": size}
    torch.manual_seed(0)
    net = create_architecture(name, **kwargs)
    x = torch.rand(2, channels, size, size)
    net.train()
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 6]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 7)
    path = tmp_path / f"{name}.safetensors"
    pre = Preprocessing(channels, (size, size), (0.5,), (0.25,), tuple("abcdefg"))
    save_checkpoint(path, net, name, kwargs, pre)
    loaded = load_checkpoint(path)
    assert loaded.architecture == name and loaded.preprocessing == pre
    with torch.no_grad():
        assert torch.equal(loaded.net(x), logits)


def test_small_cnn_handles_digits_and_non_square() -> None:
    assert create_architecture("small-cnn", in_channels=1, input_size=8)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert create_architecture("small-cnn", in_channels=3, input_size=(16, 24))(torch.zeros(1, 3, 16, 24)).shape == (1, 10)
    with pytest.raises(ValueError, match="8-64 px"):
        create_architecture("small-cnn", input_size=4)


def test_unknown_architecture_suggests_close_names() -> None:
    from advkit.errors import AdvkitError

    with pytest.raises(AdvkitError, match="did you mean resnet20"):
        create_architecture("resnet2")


@pytest.mark.parametrize("name", architecture_names())
@pytest.mark.parametrize(("settings", "message"), [
    ({"width": 4}, "has no setting width; choose from num_classes, in_channels, input_size"),
    ({"num_classes": -1}, "num_classes must be an int >= 1, got -1"),
    ({"num_classes": True}, "num_classes must be an int, got True"),
    ({"in_channels": 2.5}, "in_channels must be an int, got 2.5"),
    ({"in_channels": 0}, "in_channels must be an int >= 1, got 0"),
    ({"input_size": "abc"}, "input_size must be an int >= 1 or a [height, width] pair of them, got 'abc'"),
    ({"input_size": [8, 8, 8]}, "input_size must be an int >= 1 or a [height, width] pair of them, got [8, 8, 8]"),
])
def test_bad_architecture_settings_are_one_line_value_errors(name: str, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(name)}:? {re.escape(message)}$"):
        create_architecture(name, **settings)
