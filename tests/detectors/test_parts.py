"""Autoencoders, taps, baselines and metrics of the detector package, checked on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from advkit.detectors.autoencoders import KINDS, build_autoencoder, mmd_imq
from advkit.detectors.baselines import fit_mahalanobis, mahalanobis_score
from advkit.detectors.evaluate import auroc, fit_supervised, tpr_at_fpr
from advkit.detectors.taps import default_layers, layer_shapes
from advkit.errors import DetectorError
from advkit.models import create_architecture


@pytest.mark.parametrize("shape", [(32, 14, 14), (64, 7, 7), (16, 28, 28), (8, 3, 5), (128, 1, 1)])
@pytest.mark.parametrize("kind", KINDS)
def test_autoencoders_mirror_any_feature_shape(shape: tuple[int, int, int], kind: str) -> None:
    ae = build_autoencoder(shape, kind=kind, filters=8, latent=16)
    x = torch.rand(3, *shape)
    recon, z = ae(x)
    assert recon.shape == x.shape and z.shape == (3, 16)
    assert torch.isfinite(ae.loss(x, torch.Generator().manual_seed(0)))


def test_architecture_rule_of_the_paper() -> None:
    # l = min(floor(log2(min(H, W))), 3) strided 4x4 convs, preceded by 3 - l stride-1 3x3 convs
    for (h, strided) in ((32, 3), (7, 2), (3, 1), (1, 0)):
        ae = build_autoencoder((4, h, h), filters=8)
        kernels = [conv.kernel_size[0] for conv in ae.encoder]
        assert kernels == [3] * (3 - strided) + [4] * strided, h


def test_training_reduces_reconstruction_error() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(4, 8, 6, 6, generator=g)
    data = torch.einsum("nk,kchw->nchw", torch.rand(128, 4, generator=g), basis)  # a 4-dimensional manifold
    torch.manual_seed(0)
    ae = build_autoencoder((8, 6, 6), filters=8, latent=8)
    opt = torch.optim.Adam(ae.parameters(), 1e-2)
    before = float((ae(data)[0] - data).pow(2).mean().detach())
    for _ in range(100):
        opt.zero_grad()
        ae.loss(data, g).backward()
        opt.step()
    assert float((ae(data)[0] - data).pow(2).mean().detach()) < 0.2 * before


def test_mmd_separates_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    same = mmd_imq(torch.randn(300, 8, generator=g) * 1.41, torch.randn(300, 8, generator=g) * 1.41)
    other = mmd_imq(torch.randn(300, 8, generator=g) * 1.41, torch.randn(300, 8, generator=g) * 5)
    assert abs(float(same)) < 0.01 < float(other)


def test_default_layers_per_architecture() -> None:
    assert default_layers(create_architecture("resnet20", in_channels=3), (3, 32, 32)) == ["stem", "layers.0", "layers.1", "layers.2"]
    vgg = create_architecture("vgg11", in_channels=3, input_size=32)
    layers = default_layers(vgg, (3, 32, 32))
    assert len(layers) == 5 and all(type(dict(vgg.named_modules())[n]).__name__ == "MaxPool2d" for n in layers)
    shapes = layer_shapes(vgg, layers, (3, 32, 32))
    assert shapes[layers[0]] == (64, 16, 16)
    generic = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 64, 2))
    assert default_layers(generic, (1, 8, 8)) == ["0", "1"]
    # without an input size (advkit models info on a bare module) only the known architectures have defaults
    assert default_layers(create_architecture("small-cnn", in_channels=1, input_size=8), None) == ["block1", "block2"]
    with pytest.raises(DetectorError, match="--layers"):
        default_layers(generic, None)


def test_layer_shapes_reject_unknown_names_with_suggestions() -> None:
    net = create_architecture("resnet20", in_channels=3)
    with pytest.raises(DetectorError, match=r"did you mean layers\.1"):
        layer_shapes(net, ["layers.1x"], (3, 32, 32))
    assert layer_shapes(net, ["fc"], (3, 32, 32)) == {"fc": (10, 1, 1)}  # vectors become (D, 1, 1)


def test_mahalanobis_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 3
    feats = torch.randn(400, 5, generator=g) + labels[:, None].float() * 3
    means, precision = fit_mahalanobis(feats, labels, 4)  # class 3 absent: never the closest
    q = torch.randn(6, 5, generator=g)
    expected = torch.stack([torch.stack([(v - means[k]) @ precision @ (v - means[k]) for k in range(3)]).min() for v in q])
    torch.testing.assert_close(mahalanobis_score(q, means, precision), expected, rtol=1e-4, atol=1e-4)


def test_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 500), rng.normal(1.5, 1, 300)
    assert auroc(neg, pos) == pytest.approx(roc_auc_score(np.r_[np.zeros(500), np.ones(300)], np.r_[neg, pos]))
    threshold = np.quantile(neg, 0.95)
    assert tpr_at_fpr(neg, pos, 0.05) == pytest.approx((pos > threshold).mean(), abs=0.01)
    assert np.isnan(auroc(neg, pos[:0]))


def test_supervised_grid_search_learns_a_separable_problem() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (60, 4)), rng.normal(2, 1, (60, 4))]
    y = np.r_[np.zeros(60), np.ones(60)]
    for kind in ("svc", "logreg"):
        model = fit_supervised(x, y, kind, seed=0, quick=kind == "logreg")
        test = np.r_[rng.normal(0, 1, (50, 4)), rng.normal(2, 1, (50, 4))]
        assert auroc(model.decision_function(test[:50]), model.decision_function(test[50:])) > 0.9


def test_a_layer_followed_by_an_in_place_relu_gives_its_own_output() -> None:
    """small-cnn's convs are followed by ReLU(inplace=True), which rewrote the captured tensor: tapping block1.0 (a
    Conv2d) gave relu(conv), with no negative value, for the features and for the adaptive attack's gradients."""
    from advkit.detectors.features import layer_features
    from advkit.models import ModelWrapper, Preprocessing

    torch.manual_seed(0)
    model = ModelWrapper(create_architecture("small-cnn", in_channels=1, input_size=8), Preprocessing())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        conv = model.net.block1[0](model.normalise(x))
    assert bool((conv < 0).any())
    for grad in (False, True):
        feats, _ = layer_features(model, ["block1.0", "block1"], x, grad=grad)
        torch.testing.assert_close(feats["block1.0"].detach(), conv)
