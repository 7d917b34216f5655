"""Keep-best epoch selection: the carved val split, each method's criterion, ties, and no test image ever seen."""

from __future__ import annotations

import numpy as np
import pytest

from advkit.datasets import ImageDataset, open_dataset
from advkit.defenses import FinetuneMethod
from advkit.defenses.selection import epoch_selection, with_validation_split
from advkit.errors import AdvkitError, DatasetError
from advkit.models import ModelWrapper, create_architecture
from advkit.training import TrainSettings, _at_least_as_good, fit_preprocessing, train_classifier


def test_carved_val_split_comes_from_train_only_and_is_seeded(digits: ImageDataset) -> None:
    carved = with_validation_split(digits, seed=0)
    val, test = carved.indices("val"), carved.indices("test")
    assert np.array_equal(test, digits.indices("test"))  # the test split is untouched
    assert set(val) <= set(digits.indices("train")) and not set(val) & set(carved.indices("train"))
    assert len(val) == pytest.approx(0.1 * len(digits.indices("train")), abs=10)
    assert set(np.unique(carved.labels[val])) == set(range(10))  # stratified
    assert np.array_equal(with_validation_split(digits, seed=0).indices("val"), val)  # the same on every rank
    assert not np.array_equal(with_validation_split(digits, seed=1).indices("val"), val)
    own = open_dataset("digits", val_fraction=0.2)
    assert with_validation_split(own, seed=0) is own  # a dataset's own val split is used as it is


def test_too_small_a_train_split_to_carve_is_one_line() -> None:
    tiny = ImageDataset("tiny", np.zeros((10, 4, 4, 1), np.uint8), np.arange(10) % 2, ["even", "odd"])
    with pytest.raises(DatasetError, match="^tiny has too few training images per class to carve a val split"):
        with_validation_split(tiny, seed=0)


def test_keep_best_needs_a_val_split(digits: ImageDataset) -> None:
    net = create_architecture("small-cnn", in_channels=1, input_size=8)
    with pytest.raises(AdvkitError, match="no val split"):
        train_classifier(net, digits, TrainSettings(epochs=1), preprocessing=fit_preprocessing(digits), validate=lambda m: 0.0)


def test_epochs_rank_by_score_then_clean_accuracy_then_the_later_epoch() -> None:
    best = {"score": 0.5, "clean": 0.9}
    assert _at_least_as_good(0.6, 0.1, best)  # the score decides first
    assert not _at_least_as_good(0.4, 1.0, best)
    assert _at_least_as_good(0.5, 0.95, best) and not _at_least_as_good(0.5, 0.85, best)  # then clean accuracy
    assert _at_least_as_good(0.5, 0.9, best)  # a full tie: the later epoch
    assert _at_least_as_good(0.0, 0.0, {})


def test_a_constant_score_keeps_the_cleanest_epoch_not_the_first(digits: ImageDataset) -> None:
    """PGD accuracy of the paper's protocols stays 0: with a strict comparison epoch 1 was always kept."""
    ds = with_validation_split(digits, seed=0)
    net = create_architecture("small-cnn", in_channels=1, input_size=8)  # from scratch: clean accuracy climbs
    outcome = train_classifier(net, ds, TrainSettings(epochs=3, lr=3e-3), preprocessing=fit_preprocessing(ds),
                               validate=lambda model: 0.0)
    clean = outcome.history["eval_acc"]
    assert clean[-1] > clean[0]
    assert outcome.best_epoch == max(range(1, 4), key=lambda e: (clean[e - 1], e))


@pytest.mark.parametrize(("method", "threat"), [("pgd", "pgd (eps 0.3"), ("fast", "pgd"), ("trades", "pgd"),
                                                 ("paper-white", "pixle (restarts 5"), ("paper-black", "pixle"),
                                                 ("plain", "clean accuracy")])
def test_each_method_selects_against_its_own_threat(method: str, threat: str, digits_model: ModelWrapper, digits: ImageDataset) -> None:
    ds = with_validation_split(digits, seed=0)
    selection = epoch_selection(FinetuneMethod(method), ds, digits_model, seed=0)
    assert threat in selection.criterion and "val images" in selection.criterion


def test_selection_attacks_only_val_images_with_seeded_draws(digits_model: ModelWrapper, digits: ImageDataset,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ds = with_validation_split(digits, seed=0)
    seen: list[int] = []
    batch = ds.batch
    monkeypatch.setattr(ds, "batch", lambda idx: (seen.extend(int(i) for i in idx), batch(idx))[1])
    selection = epoch_selection(FinetuneMethod("paper-black"), ds, digits_model, seed=0)
    first = selection.score(digits_model)
    assert seen and set(seen) <= set(ds.indices("val"))  # never a test image
    assert selection.score(digits_model) == first  # every epoch scores the same attack draws
    weak = epoch_selection(FinetuneMethod("pgd", eps=0.01), ds, digits_model, seed=0).score(digits_model)
    strong = epoch_selection(FinetuneMethod("pgd", eps=0.3), ds, digits_model, seed=0).score(digits_model)
    assert weak > strong  # the method's own eps is the threat
    assert set(seen) <= set(ds.indices("val"))
