"""The torchattacks adapter on models the digits fixture does not cover: other class counts, no class names,
non-square images. Tiny random nets, so each test takes well under a second."""

from __future__ import annotations

import json

import pytest
import torch

from advkit.attacks import create_attack
from advkit.attacks.torchattacks_adapter import TORCHATTACKS_NAMES
from advkit.errors import AdvkitError, SettingsError
from advkit.models import ModelWrapper, Preprocessing


def tiny_model(classes: int, c: int = 3, h: int = 8, w: int = 8, *, names: bool = True,
               fixed_size: bool = True) -> ModelWrapper:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(c, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, classes))
    pre = Preprocessing(channels=c, input_size=(h, w) if fixed_size else None, mean=(0.5,) * c, std=(0.25,) * c,
                        class_names=tuple(str(i) for i in range(classes)) if names else ())
    return ModelWrapper(net, pre)


def images(n: int, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(1))


def predicted(model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(x).argmax(1)


def test_fab_refuses_targeted_mode_instead_of_returning_clean_images() -> None:
    """torchattacks' FAB read the target as the label, found every image "misclassified" and returned it clean."""
    model = tiny_model(5)
    x = images(3)
    y = predicted(model, x)
    with pytest.raises(AdvkitError, match=r"^attack fab has no targeted mode$"):
        create_attack("fab", steps=2)(model, x, y, target=(y + 1) % 5)


def test_attacks_without_a_targeted_mode_say_so_before_running() -> None:
    # the CLI refuses --targeted for them before any attack of the call runs, so this must match torchattacks
    refused = sorted(name for name in TORCHATTACKS_NAMES if not create_attack(name).supports_targeted)
    assert refused == ["apgd", "apgdt", "autoattack", "deepfool", "fab", "gn", "pifgsm", "sparsefool", "tpgd"]
    assert create_attack("pgd").supports_targeted and create_attack("ta-pixle").supports_targeted


@pytest.mark.parametrize("classes", [5, 12])
def test_untargeted_jsma_aims_at_the_next_class_of_the_model(classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchattacks aims at (y + 1) % 10: an IndexError on 5 classes, and classes 10 and 11 never aimed at on 12."""
    import torchattacks

    aimed: list[int] = []
    original = torchattacks.JSMA.perturbation_single

    def spy(self: object, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        aimed.append(int(target))
        return original(self, image, target)

    monkeypatch.setattr(torchattacks.JSMA, "perturbation_single", spy)
    model = tiny_model(classes, 1, 4, 4)
    x = images(3, 1, 4, 4)
    y = torch.tensor([classes - 1, classes - 2, 3])
    result = create_attack("jsma", theta=1.0)(model, x, y)
    assert aimed[-3:] == ((y + 1) % classes).tolist()
    assert torch.equal(result.success, result.adv_pred.ne(y))  # still judged as an untargeted attack


@pytest.mark.parametrize("settings", [{}, {"restarts": 2}])
@pytest.mark.parametrize(("h", "w"), [(6, 11), (11, 6)])
def test_ta_pixle_refuses_non_square_images_without_blaming_the_settings(h: int, w: int, settings: dict[str, int]) -> None:
    model = tiny_model(5, 1, h, w)
    x = images(2, 1, h, w)
    with pytest.raises(AdvkitError, match=rf"^ta-pixle: torchattacks Pixle works on square images only, got {h}x{w}; "
                                          "use advkit's pixle") as caught:
        create_attack("ta-pixle", **settings)(model, x, predicted(model, x))
    assert not isinstance(caught.value, SettingsError)


@pytest.mark.parametrize(("name", "settings"), [
    ("apgdt", {"steps": 2}), ("square", {"n_queries": 30, "eps": 0.3}), ("apgd", {"steps": 3, "eps": 0.1}),
    ("fab", {"steps": 3}),
])
def test_a_replay_of_the_recorded_params_gives_the_same_result(name: str, settings: dict[str, object]) -> None:
    """params() recorded n_classes=10 and seed=0, which the run never used: a replay crashed (apgdt) or changed (square)."""
    model = tiny_model(5)
    x = images(4)
    y = predicted(model, x)
    seeds = torch.tensor([3, 4, 5, 6])
    attack = create_attack(name, **settings)
    first = attack(model, x, y, seeds=seeds)
    recorded = json.loads(json.dumps(attack.params()))  # as a report stores it
    assert recorded.pop("torchattacks") == attack.class_name
    assert "seed" not in recorded and "n_classes" not in recorded
    replay = create_attack(name, **recorded)(model, x, y, seeds=seeds)
    assert torch.equal(first.x_adv, replay.x_adv) and torch.equal(first.queries, replay.queries)


def test_recorded_params_keep_what_the_user_set() -> None:
    params = create_attack("apgdt", n_classes=5, seed=3).params()
    assert params["n_classes"] == 5 and params["seed"] == 3


@pytest.mark.parametrize("name", ["fab", "apgdt", "autoattack"])
def test_attacks_needing_the_class_count_read_it_from_the_logits(name: str) -> None:
    """A model without class names used to need --param n_classes=K."""
    model = tiny_model(5, names=False)
    x = images(2)
    y = predicted(model, x)
    settings = {"fab": {"steps": 2}, "apgdt": {"steps": 2}, "autoattack": {"eps": 0.5}}[name]
    seeds = torch.tensor([1, 2])
    probed = create_attack(name, **settings)(model, x, y, seeds=seeds)
    given = create_attack(name, **settings, n_classes=5)(model, x, y, seeds=seeds)
    assert torch.equal(probed.x_adv, given.x_adv)
    with pytest.raises(AdvkitError, match=rf"^{name}: n_classes=7, but the model has 5 classes$"):
        create_attack(name, **settings, n_classes=7)(model, x, y)


@pytest.mark.parametrize("name", ["difgsm", "tifgsm"])
def test_input_diversity_attacks_refuse_what_their_resizing_cannot_handle(name: str) -> None:
    """torchattacks resizes to x.shape[-1] squared: the model then said "takes 8x12 images, got 12x12"."""
    wide = tiny_model(5, 3, 8, 12)
    x = images(2, 3, 8, 12)
    with pytest.raises(AdvkitError, match=rf"^{name}: torchattacks .* works on square images only, got 8x12: its input "
                                          r"diversity resizes to W x W \(diversity_prob=0 turns it off\)$"):
        create_attack(name)(wide, x, predicted(wide, x))
    create_attack(name, diversity_prob=0.0)(wide, x, predicted(wide, x))  # no resizing, no problem
    fixed = tiny_model(5)
    x = images(2)
    with pytest.raises(SettingsError, match=rf"^{name}: resize_rate must be <= 1 for a model with a fixed input size "
                                            r"\(8x8\), got 1.5$"):
        create_attack(name, resize_rate=1.5)(fixed, x, predicted(fixed, x))
    free = tiny_model(5, fixed_size=False)
    result = create_attack(name, resize_rate=1.5)(free, x, predicted(free, x))  # a model that takes any size
    assert result.x_adv.shape == x.shape


@pytest.mark.parametrize("name", ["eadl1", "eaden"])
def test_ead_refuses_fewer_than_10_iterations_with_early_abort(name: str) -> None:
    """torchattacks checks every max_iterations // 10 steps: "integer modulo by zero" below 10."""
    with pytest.raises(SettingsError, match=rf"^{name}: max_iterations must be >= 10 when abort_early is true, got 5$"):
        create_attack(name, max_iterations=5)
    model = tiny_model(5)
    x = images(2)
    result = create_attack(name, max_iterations=5, abort_early=False, binary_search_steps=1)(model, x, predicted(model, x))
    assert result.queries.min() >= 1


def test_python_style_booleans_get_a_hint() -> None:
    with pytest.raises(SettingsError, match=r"^pgd: random_start must be true or false, got 'False' "
                                            r"\(write true or false\)$"):
        create_attack("pgd", random_start="False")


@pytest.mark.parametrize(("name", "settings"), [("pgd", {"eps": 2.0}), ("fgsm", {"eps": "8"}), ("spsa", {"eps": 1.5}),
                                                ("square", {"eps": 8.0}), ("pifgsm", {"max_epsilon": 16.0})])
def test_an_linf_budget_above_one_is_refused_as_meant_in_0_255_levels(name: str, settings: dict[str, object]) -> None:
    """On [0, 1] pixels an L-inf budget of 1 allows any image: eps=8 is 8/255 mistyped, and would break every model."""
    key, value = next(iter(settings.items()))
    with pytest.raises(SettingsError, match=rf"^{name}: {key} must be <= 1 for an L-inf budget .* written {float(value):g}/255$"):
        create_attack(name, **settings)


def test_l2_budgets_above_one_stay_allowed() -> None:
    for name, settings in [("pgdl2", {"eps": 3.0}), ("apgd", {"eps": 3.0, "norm": "L2"}), ("square", {"eps": 3.0, "norm": "L2"})]:
        assert create_attack(name, **settings).settings["eps"] == 3.0
    assert create_attack("pgd", eps=1).settings["eps"] == 1  # the largest meaningful L-inf budget


def test_numpy_numbers_are_settings_like_pythons() -> None:
    """np.int64(5) restarts, np.int64(3) steps or np.float32(0.1) eps were refused ('must be a finite number'), while
    Pixle's x_dimensions took them: settings read from arrays or configs built with NumPy failed."""
    import numpy as np

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model = ModelWrapper(net, Preprocessing(channels=1, input_size=(8, 8)))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model.logits(x).argmax(1)
    numpy_made = {"pixle": {"restarts": np.int64(2), "max_iterations": np.int64(3), "candidates_per_pass": np.int32(2)},
                  "white-pixle": {"restarts": np.int64(2), "max_iterations": np.int64(3)},
                  "pgd": {"steps": np.int64(3), "eps": np.float32(0.1), "alpha": np.float64(0.02)}}
    for name, settings in numpy_made.items():
        attack = create_attack(name, **settings)
        python = create_attack(name, **{k: v.item() for k, v in settings.items()})
        assert attack.params() == python.params(), name
        budget = np.int64(40)
        assert torch.equal(attack(model, x, y, max_queries=budget).x_adv, python(model, x, y, max_queries=40).x_adv), name
    with pytest.raises(ValueError, match="restarts must be an int >= 1, got np.int64\\(0\\)"):
        create_attack("pixle", restarts=np.int64(0))


@pytest.mark.parametrize(("name", "settings", "classes", "targeted", "needed"), [
    ("apgdt", {"steps": 2}, 3, False, 4), ("autoattack", {"eps": 0.01}, 3, False, 4),
    ("autoattack", {"eps": 0.01, "version": "rand"}, 2, False, 3), ("apgd", {"loss": "dlr", "steps": 2}, 2, False, 3),
    ("upgd", {"loss": "dlr", "steps": 2}, 3, True, 4),
])
def test_dlr_loss_attacks_refuse_models_with_too_few_classes(name: str, settings: dict[str, object], classes: int,
                                                             targeted: bool, needed: int) -> None:
    """torchattacks' DLR loss reads the 3rd (targeted: 4th) largest logit: an IndexError traceback, or with settings
    a SettingsError blaming them ("check these settings")."""
    model = tiny_model(classes, 1, 4, 4)
    x = images(3, 1, 4, 4)
    y = predicted(model, x)
    target = (y + 1) % classes if targeted else None
    with pytest.raises(AdvkitError, match=rf"^{name}: torchattacks \w+'s DLR loss needs a model with at least {needed} "
                                          rf"classes, this one has {classes}; .* avoids it$") as caught:
        create_attack(name, **settings)(model, x, y, target=target)
    assert not isinstance(caught.value, SettingsError)
    bigger = tiny_model(needed, 1, 4, 4)  # enough classes: it runs
    y = predicted(bigger, x)
    target = (y + 1) % needed if targeted else None
    assert create_attack(name, **settings)(bigger, x, y, target=target).queries.min() >= 1


@pytest.mark.parametrize("name", ["eadl1", "eaden"])
def test_ead_attacks_float64_images(name: str) -> None:
    """torchattacks keeps EAD's best L1 distances in float32: float64 images failed with "Index put requires the
    source and destination dtypes match" (with settings given, blamed on them)."""
    model = tiny_model(5, 1, 4, 4)
    x = images(3, 1, 4, 4)
    y = predicted(model, x)
    settings = {"max_iterations": 10, "binary_search_steps": 2}
    single = create_attack(name, **settings)(model, x, y)
    double = create_attack(name, **settings)(model, x.double(), y)
    assert double.x_adv.dtype == torch.float64
    assert torch.equal(double.x_adv.float(), single.x_adv) and torch.equal(double.success, single.success)


@pytest.mark.parametrize(("name", "settings"), [("pgdl2", {"steps": 3}), ("jsma", {}), ("pgdrs", {"noise_batch_size": 2, "steps": 3}),
                                                ("pgd", {"steps": 3}), ("jitter", {"steps": 3})])
def test_channels_last_images_are_attacked_like_contiguous_ones(name: str, settings: dict[str, object]) -> None:
    """A channels_last batch (or any permuted view): pgdl2, jsma and pgdrs failed on torchattacks' .view() ("view size
    is not compatible"), and randomised attacks drew their noise in memory order, so the same images and seeds gave
    another result (pgd's random start, jitter)."""
    model = tiny_model(5)
    x = images(3)
    y = predicted(model, x)
    seeds = torch.tensor([4, 5, 6])
    strided = create_attack(name, **settings)(model, x.contiguous(memory_format=torch.channels_last), y, seeds=seeds)
    dense = create_attack(name, **settings)(model, x, y, seeds=seeds)
    assert torch.equal(strided.x_adv, dense.x_adv) and torch.equal(strided.queries, dense.queries)


@pytest.mark.parametrize(("name", "settings"), [("square", {"n_queries": 10, "eps": 0.3}), ("pgd", {"steps": 2}),
                                                ("deepfool", {"steps": 2})])
def test_a_net_without_parameters_is_attacked_without_printing(name: str, settings: dict[str, object],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """torchattacks printed "Failed to set device automatically" to stdout for every attacked sample of a net with no
    parameters (a black box behind a module), in the middle of a --json report on stdout."""
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((2, 2)), torch.nn.Flatten())  # 4 class scores, no weights
    model = ModelWrapper(net, Preprocessing(channels=1))
    x = images(3, 1, 4, 4)
    result = create_attack(name, **settings)(model, x, predicted(model, x))
    assert capsys.readouterr().out == ""
    assert result.queries.min() >= 1
