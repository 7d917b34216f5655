"""Attacks and evaluation helpers see the net as deployed and leave it as they found it: eval mode inside (dropout
off, BatchNorm statistics untouched), the mode and ``requires_grad`` flags restored after, no ``.grad`` left on the
weights; and they refuse a model whose outputs disagree with its classes in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advkit.attacks import create_attack
from advkit.attacks.runner import select_samples
from advkit.attacks.transfer import predictions
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper, Preprocessing
from advkit.training import predict


def _dropout_bn_model() -> ModelWrapper:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                        nn.Linear(4 * 64, 10))
    model = ModelWrapper(net, Preprocessing(channels=1, input_size=(8, 8)))
    net.train()  # a training loop switched the wrapped net to train mode
    net[0].bias.requires_grad_(False)  # and froze one parameter itself
    return model


@pytest.mark.parametrize("name, settings", [("cw", {"steps": 2}), ("deepfool", {"steps": 2}), ("jsma", {}),
                                            ("pgd", {"steps": 2}), ("white-pixle", {"restarts": 2, "max_iterations": 3})])
def test_an_attack_leaves_no_gradient_on_the_weights_and_restores_the_net(name: str, settings: dict) -> None:
    """CW, DeepFool, JSMA (and FAB, AutoAttack, ...) left .grad filled on the weights: a fine-tuning loop's next
    optimiser step added them in."""
    model = _dropout_bn_model()
    net = model.net
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.logits(x).argmax(1)  # eval-mode predictions: the logits method does not change the mode
    stats = net[1].running_mean.clone(), int(net[1].num_batches_tracked)
    create_attack(name, **settings)(model, x, y)
    assert all(p.grad is None for p in net.parameters()), [n for n, p in net.named_parameters() if p.grad is not None]
    assert [p.requires_grad for p in net.parameters()] == [True, False, True, True, True, True]
    assert all(m.training for m in net.modules())
    assert torch.equal(net[1].running_mean, stats[0]) and int(net[1].num_batches_tracked) == stats[1]


def test_evaluation_helpers_run_a_train_mode_net_as_deployed(digits: ImageDataset) -> None:
    """select_samples, the transfer/robustness predictions and training.predict ran a net switched to train mode
    with dropout on and BatchNorm updating (results changed from call to call), and predict left it in eval mode."""
    model = _dropout_bn_model()
    net = model.net
    tracked = int(net[1].num_batches_tracked)
    plans = [select_samples(model, digits, n=20, only_correct=False) for _ in range(2)]
    assert np.array_equal(plans[0].clean_pred, plans[1].clean_pred)
    x, _ = digits.batch(digits.indices("test")[:64])
    assert torch.equal(predictions(model, x), predictions(model, x))
    index = digits.indices("test")[:64]
    assert np.array_equal(predict(model, digits, index), predictions(model, x).numpy())
    assert int(net[1].num_batches_tracked) == tracked and all(m.training for m in net.modules())


def test_norms_of_inputs_that_require_grad_are_plain_numbers() -> None:
    model = _dropout_bn_model()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    with torch.no_grad():
        y = model.logits(x).argmax(1)
    result = create_attack("pixle", restarts=2, max_iterations=3)(model, x, y)
    assert not result.l2.requires_grad and not result.linf.requires_grad
    assert result.l2.numpy().shape == (3,)  # raised "Can't call numpy() on Tensor that requires grad"


def test_a_net_with_fewer_outputs_than_classes_is_one_line(digits: ImageDataset) -> None:
    """12 class names on a 10-output net, or a 5-class net on 10-class digits, failed deep inside with index errors."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    twelve = ModelWrapper(net, Preprocessing(channels=1, input_size=(8, 8), class_names=tuple(map(str, range(12)))))
    x = torch.rand(2, 1, 8, 8)
    for name in ("pixle", "pgd"):
        with pytest.raises(AdvkitError, match="the net outputs 10 class scores but its preprocessing names 12 classes"):
            create_attack(name)(twelve, x, torch.tensor([11, 3]))
    five = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), Preprocessing(channels=1, input_size=(8, 8)))
    with pytest.raises(AdvkitError, match="digits has class 9 but the model outputs 5 classes"):
        select_samples(five, digits, n=10)


def test_torchattacks_on_float16_images_attack_in_float32(digits_model: ModelWrapper, digits: ImageDataset) -> None:
    """In float16 73% of FGSM's input-gradient entries underflowed to 0: it moved a quarter of the pixels it moves in
    float32 and reported a robustness the model does not have."""
    x, y = digits.batch(digits.indices("test")[:64])
    x = x.half().float()  # exact in float16
    single = create_attack("fgsm", eps=0.1)(digits_model, x, y)
    half = create_attack("fgsm", eps=0.1)(digits_model, x.half(), y)
    assert half.x_adv.dtype == torch.float16
    moved = [float((r.x_adv.float() != x).float().mean()) for r in (single, half)]
    assert moved[0] > 0.5 and moved[1] >= 0.95 * moved[0], moved
    assert torch.equal(half.x_adv.float(), single.x_adv.half().float())  # float32's attack, rounded


def test_inputs_of_the_wrong_type_are_one_line() -> None:
    """NumPy labels or images and a bare nn.Module gave AttributeErrors from deep inside."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = ModelWrapper(net, Preprocessing(channels=1, input_size=(8, 8)))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    attack = create_attack("pixle", restarts=1, max_iterations=1)
    for args, message in [((model, x, y.numpy()), "attack labels must be a torch.Tensor, got ndarray"),
                          ((model, x.numpy(), y), "attack images must be a torch.Tensor, got ndarray"),
                          ((model, x, [0, 1]), "attack labels must be a torch.Tensor, got list"),
                          ((net, x, y), "attacks take an advkit ModelWrapper, got Sequential")]:
        with pytest.raises(AdvkitError, match=message):
            attack(*args)
    with pytest.raises(AdvkitError, match="attack targets must be a torch.Tensor"):
        attack(model, x, y, target=np.array([2, 3]))
