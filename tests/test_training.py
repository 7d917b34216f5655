"""Training helpers: augmentation, settings validation, resume refusal on changed settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError, CheckpointError
from advkit.models import create_architecture
from advkit.training import TrainSettings, augment, fit_preprocessing, train_classifier


def test_translation_is_a_zero_padded_shift() -> None:
    x = torch.rand(5, 2, 6, 7)
    out = augment(x, TrainSettings(translate=2), torch.Generator().manual_seed(4))
    shifts = torch.randint(0, 5, (5, 2), generator=torch.Generator().manual_seed(4))
    padded = F.pad(x, (2, 2, 2, 2))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 7])


def test_settings_are_validated() -> None:
    for kwargs, message in [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "learning rate"), ({"optimizer": "lbfgs"}, "unknown optimizer"),
                            ({"schedule": "step"}, "unknown schedule"), ({"translate": -1}, "translate"),
                            ({"lr": float("nan")}, "learning rate"), ({"lr": float("inf")}, "learning rate"),
                            ({"weight_decay": -1.0}, "weight decay"), ({"weight_decay": float("nan")}, "weight decay")]:
        with pytest.raises(AdvkitError, match=message):
            TrainSettings(**kwargs)  # type: ignore[arg-type]


def test_resume_refuses_a_state_written_with_other_settings(digits: ImageDataset, tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    net = create_architecture("small-cnn", in_channels=1, input_size=8)
    pre = fit_preprocessing(digits)
    train_classifier(net, digits, TrainSettings(epochs=1), preprocessing=pre, state_path=state)
    with pytest.raises(CheckpointError, match=r"different settings \(lr: 0.001 vs 0.01\)"):
        train_classifier(net, digits, TrainSettings(epochs=1, lr=0.01), preprocessing=pre, state_path=state)


def test_resume_refuses_a_state_of_another_start_model_or_other_data(digits: ImageDataset, tmp_path: Path) -> None:
    """Found by a CLI sweep: under a new --run, a fine-tune resumed another checkpoint's state and credited its accuracy."""
    from dataclasses import replace

    state = tmp_path / "state.pt"
    settings, pre = TrainSettings(epochs=2), fit_preprocessing(digits)

    def fresh(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_architecture("small-cnn", in_channels=1, input_size=8)

    train_classifier(fresh(0), digits, settings, preprocessing=pre, state_path=state)
    resumed = train_classifier(fresh(0), digits, settings, preprocessing=pre, state_path=state)  # the same start: resumes
    assert resumed.resumed_from_epoch == 2
    with pytest.raises(CheckpointError, match="started from another model .*; delete it to start over"):
        train_classifier(fresh(1), digits, settings, preprocessing=pre, state_path=state)
    with pytest.raises(CheckpointError, match="started from another model"):  # normalised otherwise
        train_classifier(fresh(0), digits, settings, preprocessing=replace(pre, mean=(0.5,)), state_path=state)
    resplit = replace(digits, split=digits.split[::-1].copy())
    with pytest.raises(CheckpointError, match=r"started from other data \(name, labels or split\)"):
        train_classifier(fresh(0), resplit, settings, preprocessing=pre, state_path=state)


def test_translations_past_the_image_are_refused(digits: ImageDataset) -> None:
    net = create_architecture("small-cnn", in_channels=1, input_size=8)
    with pytest.raises(AdvkitError, match="translate 8 px would shift the 8x8 images of digits out of the frame; use less than 8"):
        train_classifier(net, digits, TrainSettings(epochs=1, translate=8), preprocessing=fit_preprocessing(digits))


def test_a_diverging_training_stops_before_saving_its_state(digits: ImageDataset, tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    net = create_architecture("small-cnn", in_channels=1, input_size=8)
    with pytest.raises(AdvkitError, match="training diverged: the loss is .* in epoch 1; lower the learning rate"):
        train_classifier(net, digits, TrainSettings(epochs=2, lr=1e6, schedule="constant"), preprocessing=fit_preprocessing(digits),
                         state_path=state)
    assert not state.exists()


@pytest.mark.parametrize("channels", [0, 2, -3])
def test_a_net_takes_the_datas_channels_or_three_for_gray(digits: ImageDataset, channels: int) -> None:
    assert fit_preprocessing(digits, channels=3).channels == 3 and fit_preprocessing(digits).channels == 1
    with pytest.raises(AdvkitError, match=f"digits has 1-channel images; a net for them takes 1 or 3 .* not {channels}"):
        fit_preprocessing(digits, channels=channels)


def test_resume_refuses_a_state_of_another_rank_count(digits: ImageDataset, tmp_path: Path) -> None:
    """A finetune killed under 1 process resumed under 2 torchrun ranks (or the reverse) silently: --batch-size is per
    rank, so the hybrid matched neither run. A 2-rank state (its signature as torchrun writes it) is refused here."""
    state, pre = tmp_path / "state.pt", fit_preprocessing(digits)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return create_architecture("small-cnn", in_channels=1, input_size=8)

    train_classifier(fresh(), digits, TrainSettings(epochs=1), preprocessing=pre, state_path=state)
    saved = torch.load(state, weights_only=True)
    saved["settings"]["ranks"] = 2
    torch.save(saved, state)
    with pytest.raises(CheckpointError, match=r"a training on 2 process\(es\), this one runs on 1; resume it with as many"):
        train_classifier(fresh(), digits, TrainSettings(epochs=1), preprocessing=pre, state_path=state)


def test_a_one_class_dataset_is_refused_for_training_and_a_one_class_model_for_attacks(digits: ImageDataset) -> None:
    """An image folder with one class trained to test_accuracy 1 and was then 'robust' to every attack."""
    from dataclasses import replace

    from advkit.attacks import create_attack
    from advkit.models import ModelWrapper, Preprocessing

    only_zeros = replace(digits, labels=digits.labels * 0)
    with pytest.raises(AdvkitError, match="the train split of digits holds one class \\(0\\); a classifier needs at least 2"):
        train_classifier(create_architecture("small-cnn", in_channels=1, input_size=8), only_zeros, TrainSettings(epochs=1),
                         preprocessing=fit_preprocessing(only_zeros))
    one = ModelWrapper(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1)), Preprocessing(channels=1, input_size=(8, 8)))
    with pytest.raises(AdvkitError, match="the model has 1 class: no input can change its prediction"):
        create_attack("fgsm")(one, torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_resume_refuses_a_state_that_selected_epochs_the_other_way(digits: ImageDataset, tmp_path: Path) -> None:
    """Found in review: under a new --run, `finetune --last` resumed the state of an interrupted --select-best run and
    ended on that run's best epoch (epoch 1 of 3) instead of the last; the other way round, epochs before the resume
    were never scored and could not be kept."""
    from advkit.defenses.selection import with_validation_split

    ds = with_validation_split(digits, seed=0)
    pre = fit_preprocessing(ds)
    start = create_architecture("small-cnn", in_channels=1, input_size=8).state_dict()
    for first, then, message in ((lambda model: 0.5, None, "keeps the best epoch, this one keeps the last"),
                                 (None, lambda model: 0.5, "keeps the last epoch, this one keeps the best")):
        state = tmp_path / f"state-{first is None}.pt"

        def run(validate: object) -> int:
            net = create_architecture("small-cnn", in_channels=1, input_size=8)
            net.load_state_dict(start)  # the same start model each time: its fingerprint is part of the state
            return train_classifier(net, ds, TrainSettings(epochs=1), preprocessing=pre, state_path=state,
                                    validate=validate).resumed_from_epoch  # type: ignore[arg-type]

        assert run(first) == 0
        with pytest.raises(CheckpointError, match=f"holds the state of a training that {message}"):
            run(then)
        assert run(first) == 1  # resumed the same way, it is taken up
