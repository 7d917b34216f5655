"""WhitePixle and its sorted variant: exact replay, gradient-guided choices, batch independence, accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks.white_pixle import SortedWhitePixle, WhitePixle, input_gradient
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper, Preprocessing


def model_and_batch(c: int = 3, h: int = 9, w: int = 7, n: int = 6) -> tuple[ModelWrapper, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, 3))
    model = ModelWrapper(net, Preprocessing(c, (h, w)))
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(2))
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize("attack", [
    WhitePixle(pixels_per_iteration=3, restarts=4, max_iterations=6),
    WhitePixle(pixels_per_iteration=(0.05, 0.2), mode="lth", restarts=3, max_iterations=4),
    SortedWhitePixle(pixels_per_iteration=2, attack_limit=0.3),
    SortedWhitePixle(pixels_per_iteration=3, attack_limit=12, swap=True),
])
def test_replay_is_exact_and_only_moved_positions_change(attack: WhitePixle | SortedWhitePixle) -> None:
    model, x, y = model_and_batch()
    result = attack(model, x, y)
    assert result.moves is not None
    for i, program in enumerate(result.moves):
        assert torch.equal(program.apply(x[i]), result.x_adv[i])
        changed = set((result.x_adv[i] != x[i]).flatten(1).any(0).nonzero().squeeze(1).tolist())
        assert changed <= set(program.changed_positions().tolist())


def test_results_do_not_depend_on_the_batch() -> None:
    model, x, y = model_and_batch(n=5)
    seeds = torch.arange(50, 55)
    attack = WhitePixle(pixels_per_iteration=(1, 4), restarts=4, max_iterations=5)
    together = attack(model, x, y, seeds=seeds)
    for i in range(5):
        alone = attack(model, x[i : i + 1], y[i : i + 1], seeds=seeds[i : i + 1])
        assert torch.equal(alone.x_adv[0], together.x_adv[i]) and alone.queries.item() == together.queries[i].item()


def test_htl_moves_values_of_unimportant_pixels_onto_important_ones() -> None:
    model, x, y = model_and_batch(n=4)
    magnitude, _ = input_gradient(model, x, y, torch.arange(4))
    result = SortedWhitePixle(pixels_per_iteration=1, attack_limit=1)(model, x, y)
    for i, program in enumerate(result.moves or []):
        step = program.steps[0]
        assert step.dst[0] == int(magnitude[i].argmax()) and step.src[0] == int(magnitude[i].argmin())


@pytest.mark.parametrize("mode", ["htl", "lth"])
def test_zero_gradient_pixels_are_never_sources_nor_destinations(mode: str) -> None:
    # the net only looks at the left half of the image: the right half has zero gradient
    class LeftHalf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(1 * 8 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x[:, :, :, :4].flatten(1))

    torch.manual_seed(0)
    model = ModelWrapper(LeftHalf(), Preprocessing(1, (8, 8)))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    result = WhitePixle(pixels_per_iteration=3, mode=mode, restarts=5, max_iterations=10)(model, x, model(x).argmax(1))
    sources = {int(s) % 8 for p in result.moves or [] for step in p.steps for s in step.src}
    destinations = {int(d) % 8 for p in result.moves or [] for step in p.steps for d in step.dst}
    assert sources and max(sources) < 4 and destinations and max(destinations) < 4  # docs/methods.md, both modes


def test_query_accounting() -> None:
    model, x, y = model_and_batch()
    result = WhitePixle(pixels_per_iteration=2, restarts=3, max_iterations=5)(model, x, y)
    # one gradient pass per restart started (the first also scores the clean image) plus one per candidate
    assert bool((result.queries >= 1 + result.iterations).all())
    assert bool((result.queries <= 3 + result.iterations).all())
    capped = WhitePixle(pixels_per_iteration=2, restarts=3, max_iterations=5)(model, x, y, max_queries=4)
    assert int(capped.queries.max()) <= 4
    sorted_result = SortedWhitePixle(attack_limit=5)(model, x, y)
    assert torch.equal(sorted_result.queries, 1 + sorted_result.iterations)


def test_candidates_that_move_nothing_are_iterations_but_no_queries() -> None:
    # they were charged a query each (29% of candidates on digits at k=1): nothing to learn from them
    model, x, y = model_and_batch(n=3)
    x[1] = 0.5  # an even image: every candidate copies 0.5 onto 0.5
    x[2, :, :, 3:] = 0.0  # half black, so some candidates move nothing
    y = model(x).argmax(1)
    calls: list[int] = []
    hook = model.net.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    result = WhitePixle(pixels_per_iteration=1, restarts=3, max_iterations=8)(model, x, y)
    hook.remove()
    assert result.iterations[1] == 8 and result.queries[1] == 1  # one restart (it improved nothing), no candidate
    assert result.queries[2] < 1 + result.iterations[2]
    # every forward of the attack is charged: the others are the uncounted class probe (1 image) and re-check
    assert int(result.queries.sum()) == sum(calls) - 1 - len(x)


@pytest.mark.parametrize("attack", [WhitePixle(pixels_per_iteration=2, restarts=3, max_iterations=5), SortedWhitePixle(attack_limit=5)])
def test_images_already_adversarial_cost_one_query(attack: WhitePixle | SortedWhitePixle) -> None:
    model, x, y = model_and_batch()
    wrong = (y + 1) % 3  # every image is already misclassified for these labels
    result = attack(model, x, wrong)
    assert bool(result.success.all()) and torch.equal(result.x_adv, x)
    assert result.queries.tolist() == [1] * len(x) and result.iterations.tolist() == [0] * len(x)


def test_settings_and_targets_are_checked() -> None:
    model, x, y = model_and_batch(n=2)
    with pytest.raises(AdvkitError, match="no targeted mode"):
        WhitePixle()(model, x, y, target=(y + 1) % 3)
    for kwargs, message in [({"pixels_per_iteration": 0}, "pixels_per_iteration"), ({"mode": "up"}, "mode"),
                            ({"restarts": 0}, "restarts"), ({"pixels_per_iteration": (1, 2, 3)}, "pair"),
                            ({"pixels_per_iteration": (5, 2)}, "low > high"), ({"pixels_per_iteration": (0.5, 0.1)}, "low > high")]:
        with pytest.raises(ValueError, match=message):
            WhitePixle(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="half"):
        SortedWhitePixle(attack_limit=0.8)
    with pytest.raises(AdvkitError, match="attack_limit 32 moves more than half of the 9x7 image's 63 pixels; use at most 31"):
        SortedWhitePixle(attack_limit=32)(model, x, y)  # a pixel count is checked against the image it meets


def test_long_searches_record_every_step() -> None:
    # class 0 can never lose: every improving candidate is accepted, far beyond the records' first 16 steps
    model, x, _ = model_and_batch(n=3)
    with torch.no_grad():
        model.net[-1].bias.copy_(torch.tensor([6.0, 0.0, 0.0]))
    y = torch.zeros(3, dtype=torch.long)
    result = WhitePixle(pixels_per_iteration=1, restarts=4, max_iterations=30)(model, x, y)
    assert result.moves is not None and max(len(p.steps) for p in result.moves) > 16
    for i, program in enumerate(result.moves):
        assert torch.equal(program.apply(x[i]), result.x_adv[i])


@pytest.mark.parametrize("attack", [WhitePixle(restarts=5, max_iterations=20), SortedWhitePixle(pixels_per_iteration=2, attack_limit=12)])
def test_float16_images_get_the_same_attack_as_float32(attack: WhitePixle | SortedWhitePixle) -> None:
    """In float16 the gradients of a confident net underflowed to 0 and their inverse weights overflowed to inf,
    so most images got no valid move and 'failed' after one restart (5 of 16 successes instead of 14)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.mul_(20)  # confident: tiny cross-entropy gradients
    model = ModelWrapper(net, Preprocessing(channels=1, input_size=(8, 8)))
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)).half().float()  # exact in float16
    y = model.logits(x).argmax(1)
    single, half = attack(model, x, y), attack(model, x.half(), y)
    assert single.success.sum() >= 5  # the attack works here, so equal results are a real check
    assert torch.equal(half.success, single.success) and torch.equal(half.x_adv.float(), single.x_adv)
    assert torch.equal(half.queries, single.queries)


class _Drifting(nn.Module):
    """A linear net whose class-0 logit sinks a little at every call: an unchanged image scores a little lower each
    time, like a pass of another batch size that rounds differently."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.calls = nn.Linear(64, 3), 0
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x.flatten(1)) - torch.tensor([1e-3 * self.calls, 0.0, 0.0])


def test_a_move_that_changes_no_pixel_is_never_taken() -> None:
    """On a flat image every candidate equals its base; WhitePixle took such candidates whenever they scored lower,
    recording no-op steps (which made the move tables depend on the batch size) and counting them as progress."""
    model = ModelWrapper(_Drifting(), Preprocessing(channels=1, input_size=(8, 8)))
    x = torch.full((2, 1, 8, 8), 0.5)
    result = WhitePixle(restarts=3, max_iterations=4)(model, x, torch.zeros(2, dtype=torch.long))
    assert result.moves is not None and all(not program.steps for program in result.moves)
    assert torch.equal(result.x_adv, x) and result.iterations.tolist() == [4, 4]  # one restart, no progress: stopped
