"""Move programs: replay semantics (property-based), only moved positions change, array round trip, size checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.attacks.moves import MoveProgram, Step
from advkit.attacks.moves import moves_table, programs_from_table
from advkit.errors import AdvkitError


@st.composite
def programs(draw: st.DrawFn) -> tuple[MoveProgram, torch.Tensor]:
    h, w, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    length = h * w
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        dst = draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=length, unique=True))
        src = draw(st.lists(st.integers(0, length - 1), min_size=len(dst), max_size=len(dst)))
        clean = draw(st.lists(st.booleans(), min_size=len(dst), max_size=len(dst)))
        steps.append(Step(np.array(dst), np.array(src), np.array(clean)))
    image = torch.rand(c, h, w, generator=torch.Generator().manual_seed(draw(st.integers(0, 1000))))
    return MoveProgram(h, w, steps), image


def reference_replay(program: MoveProgram, image: torch.Tensor) -> torch.Tensor:
    """The documented semantics, one move at a time: read every value of a step first, then write them."""
    clean = image.flatten(1)
    out = clean.clone()
    for step in program.steps:
        before = out.clone()
        values = [(clean if c else before)[:, s].clone() for s, c in zip(step.src, step.from_clean)]
        for d, v in zip(step.dst, values):
            out[:, d] = v
    return out.view_as(image)


@settings(max_examples=150, deadline=None)
@given(programs())
def test_apply_matches_the_documented_semantics(case: tuple[MoveProgram, torch.Tensor]) -> None:
    program, image = case
    replayed = program.apply(image)
    assert torch.equal(replayed, reference_replay(program, image))
    changed = set((replayed != image).flatten(1).any(0).nonzero().squeeze(1).tolist())
    assert changed <= set(program.changed_positions().tolist())
    assert torch.equal(program.apply(image[None])[0], replayed)  # batched and single images agree


@settings(max_examples=60, deadline=None)
@given(programs())
def test_flat_layouts_round_trip(case: tuple[MoveProgram, torch.Tensor]) -> None:
    program, image = case
    again = MoveProgram.from_arrays(program.height, program.width, program.to_arrays())
    assert torch.equal(again.apply(image), program.apply(image))
    table = moves_table(np.array([7]), [program])
    from_table = programs_from_table(table, 7, program.height, program.width)
    assert torch.equal(from_table.apply(image), program.apply(image))


def test_programs_refuse_other_sizes_and_bad_arrays() -> None:
    program = MoveProgram(4, 4, [Step.copy([0], [5])])
    with pytest.raises(AdvkitError, match="4x4 images, got 4x5"):
        program.apply(torch.zeros(1, 4, 5))
    with pytest.raises(AdvkitError, match="outside"):
        MoveProgram.from_arrays(2, 2, {"step_sizes": np.array([1]), "dst": np.array([9]), "src": np.array([0]), "from_clean": np.array([True])})
    with pytest.raises(AdvkitError, match="as many sources and from_clean flags as destinations, got 2 dst, 1 src"):
        Step.copy([0, 1], [2])  # was broadcast: both destinations took pixel 2
    with pytest.raises(AdvkitError, match="got 1 dst, 1 src, 0 from_clean"):
        MoveProgram.from_arrays(2, 2, {"step_sizes": np.array([1]), "dst": np.array([0]), "src": np.array([1]), "from_clean": np.zeros(0, bool)})
    for dst, src in (([0], [99]), ([7 * 3], [0]), ([-1], [0])):  # a source was clamped, a destination out of range crashed
        with pytest.raises(AdvkitError, match="positions outside a 2x3 image"):
            MoveProgram(2, 3, [Step.copy(dst, src)]).apply(torch.zeros(1, 2, 3))
    with pytest.raises(AdvkitError, match=r"\(C, H, W\) or \(B, C, H, W\) images, got shape \(2, 3\)"):
        MoveProgram(2, 3, [Step.copy([0], [5])]).apply(torch.zeros(2, 3))
