"""The model wrapper: pixel space, channels, output selection, query accounting and budgets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.errors import AdvkitError, QueryBudgetExceeded
from advkit.models import ModelWrapper, Preprocessing, QueryCounter, UnattributedQuery, capture, layer_table, select_logits


class Linear(nn.Module):
    def __init__(self, channels: int = 3, output: str = "tensor") -> None:
        super().__init__()
        self.fc = nn.Linear(channels * 4 * 4, 5)
        self.output = output

    def forward(self, x: torch.Tensor) -> object:
        logits = self.fc(x.flatten(1))
        return {"tensor": logits, "tuple": (logits, x), "dict": {"logits": logits, "aux": x}}[self.output]


def test_normalisation_matches_manual() -> None:
    net = Linear()
    model = ModelWrapper(net, Preprocessing(3, (4, 4), (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)))
    x = torch.rand(2, 3, 4, 4)
    manual = net.fc(((x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)).flatten(1))
    assert torch.allclose(model(x), manual)


@pytest.mark.parametrize("output", ["tensor", "tuple", "dict"])
def test_tuple_and_dict_outputs(output: str) -> None:
    net = Linear(output=output)
    model = ModelWrapper(net, Preprocessing(3, (4, 4)))
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(model(x), net.fc(x.flatten(1)))


def test_gray_images_replicate_for_rgb_nets_and_mismatches_fail() -> None:
    model = ModelWrapper(Linear(), Preprocessing(3, (4, 4)))
    gray = torch.rand(1, 1, 4, 4)
    assert torch.equal(model(gray), model(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(AdvkitError, match="takes 4x4 images, got 5x5"):
        model(torch.rand(1, 3, 5, 5))
    with pytest.raises(AdvkitError, match="3-channel images, got 2"):
        model(torch.rand(1, 2, 4, 4))


def test_wrapper_keeps_the_net_in_eval_mode() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(48, 5))
    model = ModelWrapper(net, Preprocessing(3, (4, 4))).train()
    x = torch.rand(4, 3, 4, 4)
    assert not net.training and torch.equal(model(x), model(x))


def test_query_counting_per_row_and_budget() -> None:
    model = ModelWrapper(Linear(), Preprocessing(3, (4, 4)))
    counter = QueryCounter(3, budget=4)
    with model.counting(counter):
        model(torch.rand(3, 3, 4, 4))  # one query each
        model(torch.rand(4, 3, 4, 4), rows=torch.tensor([2, 2, 2, 0]))  # 3 candidates of sample 2
        assert counter.counts.tolist() == [2, 1, 4]
        with pytest.raises(QueryBudgetExceeded, match="budget of 4"):
            model(torch.rand(1, 3, 4, 4), rows=torch.tensor([2]))
        assert counter.counts.tolist() == [2, 1, 4]  # the refused pass is not counted
        with pytest.raises(UnattributedQuery):
            model(torch.rand(2, 3, 4, 4))
    model(torch.rand(2, 3, 4, 4))  # outside the block nothing is counted
    assert counter.counts.tolist() == [2, 1, 4]
    assert model.logits is not None and counter.remaining().tolist() == [2, 3, 0]


def test_padding_rows_are_run_but_neither_counted_nor_returned() -> None:
    model = ModelWrapper(Linear(), Preprocessing(3, (4, 4)))
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([x, x[-1:].expand(2, -1, -1, -1)])
    counter = QueryCounter(2)
    with model.counting(counter):
        probs = model.probabilities(padded, torch.tensor([0, 1, 1]), padding=2)
    assert probs.shape == (3, 5) and counter.counts.tolist() == [1, 2]
    torch.testing.assert_close(probs, torch.softmax(model.logits(x), 1))
    with model.counting(QueryCounter(2)), pytest.raises(ValueError, match=r"rows must have shape \(3,\)"):
        model(padded, torch.tensor([0, 1, 1, 1, 1]), padding=2)  # padding rows need no sample


def test_unbudgeted_counts_are_summed_when_read() -> None:
    model = ModelWrapper(Linear(), Preprocessing(3, (4, 4)))
    counter = QueryCounter(3)
    with model.counting(counter):
        for _ in range(QueryCounter._MAX_PENDING + 5):  # past the pending cap: summed on the way, nothing lost
            model(torch.rand(2, 3, 4, 4), rows=torch.tensor([0, 2]))
        assert counter.counts.tolist() == [261, 0, 261]
        rows = torch.tensor([1, 1])
        model(torch.rand(2, 3, 4, 4), rows=rows)
        rows[0] = 0  # changed before it was counted: refused rather than miscounted
        with pytest.raises(RuntimeError, match="modified in place"):
            counter.counts  # noqa: B018


def test_the_nets_dtype_follows_conversions() -> None:
    model = ModelWrapper(Linear(), Preprocessing(3, (4, 4)))
    x = torch.rand(2, 3, 4, 4)
    assert model(x).dtype == torch.float32
    model.double()  # the cached dtype is dropped: float32 pixels are cast to the net's float64
    assert model(x).dtype == torch.float64


def test_select_logits_errors() -> None:
    with pytest.raises(AdvkitError, match="without 'logits'"):
        select_logits({"a": torch.zeros(1, 2), "b": torch.zeros(1, 2)})
    with pytest.raises(AdvkitError, match=r"\(B, K\)"):
        select_logits(torch.zeros(2, 3, 4))


def test_hooks_are_removed_even_on_error() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(RuntimeError):
        with capture(net, ["0"]):
            net(torch.zeros(1, 3, 8, 8))  # wrong channels raises inside the block
    assert not net[0]._forward_hooks
    rows = layer_table(net, (1, 8, 8))
    assert [(r.name, r.output_shape) for r in rows] == [("0", (2, 6, 6)), ("1", (2, 6, 6))]
    assert not net[0]._forward_hooks
    with pytest.raises(AdvkitError, match="no layer 'conv9'"):
        with capture(net, ["conv9"]):
            pass


def test_integer_logits_are_one_line() -> None:
    """A net returning class indices or int logits: softmax would fail inside torch."""
    class Counts(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.flatten(1)[:, :3] * 10).long()

    with pytest.raises(AdvkitError, match="logits must be floating point, got torch.int64"):
        ModelWrapper(Counts(), Preprocessing(1, (2, 2))).probabilities(torch.rand(2, 1, 2, 2))


def test_preprocessing_takes_its_documented_forms_and_refuses_the_rest() -> None:
    """mean=0.5 (documented as 'one value') raised TypeError, input_size=8 failed at the first forward, and a NaN std
    or 0 channels were accepted."""
    from advkit.errors import CheckpointError

    assert Preprocessing(mean=0.5, std=0.25, input_size=8) == Preprocessing(mean=(0.5,), std=(0.25,), input_size=(8, 8))
    for kwargs, message in [({"std": (float("nan"),)}, "std must be finite"), ({"channels": 0}, "channels must be an int >= 1"),
                            ({"input_size": (8,)}, "input_size must be"), ({"input_size": (8, 0)}, "input_size must be"),
                            ({"mean": "a"}, "mean must be one number or one per channel")]:
        with pytest.raises(CheckpointError, match=message):
            Preprocessing(**kwargs)  # type: ignore[arg-type]


def test_the_nets_dtype_is_followed_after_wrapping() -> None:
    """The wrapper cached the net's dtype at its first pass: net.double() afterwards made every pass fail."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model = ModelWrapper(net, Preprocessing(channels=1, input_size=(4, 4)))
    x = torch.rand(2, 1, 4, 4)
    model.logits(x)
    net.double()
    assert model.logits(x).dtype == torch.float64
