"""The seeded synthetic aligned RGB-IR generator and its paired writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advkit.datasets import PairedDataset, open_dataset
from advkit.datasets.synthetic import SHAPES, generate_rgbir, write_paired
from advkit.errors import DatasetError


def test_same_seed_gives_byte_identical_arrays() -> None:
    a, b = generate_rgbir(n_per_class=5, seed=7), generate_rgbir(n_per_class=5, seed=7)
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert a.ir.tobytes() == b.ir.tobytes()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.split, b.split)


def test_different_seed_gives_different_arrays() -> None:
    a, b = generate_rgbir(n_per_class=5, seed=0), generate_rgbir(n_per_class=5, seed=1)
    assert not np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.ir, b.ir)


def test_shapes_labels_split_and_meta() -> None:
    ds = open_dataset("synthetic-rgbir", n_per_class=4, size=24)
    assert isinstance(ds, PairedDataset)
    assert ds.rgb.shape == (40, 24, 24, 3) and ds.ir.shape == (40, 24, 24, 1)
    assert ds.rgb.dtype == np.uint8 and ds.ir.dtype == np.uint8
    assert list(ds.class_names) == list(SHAPES)
    assert np.bincount(ds.labels).tolist() == [4] * 10
    assert np.array_equal(ds.domain("rgb").split, ds.domain("ir").split)
    assert ds.meta["seed"] == "0" and ds.meta["size"] == "24" and ds.meta["ir_kind"] == "nir"


def test_views_share_structure_but_differ() -> None:
    ds = generate_rgbir(n_per_class=10)
    gray = ds.rgb.astype(np.float64).mean(axis=3)
    ir = ds.ir[..., 0].astype(np.float64)
    assert not np.array_equal(gray.astype(np.uint8), ds.ir[..., 0])
    corr = [np.corrcoef(g.ravel(), i.ravel())[0, 1] for g, i in zip(gray, ir)]
    assert np.nanmean(np.abs(corr)) > 0.2  # shared shape and shading
    assert np.mean(np.array(corr) < 0) > 0.05  # contrast inverts for some materials


def test_thermal_and_shift_change_only_ir() -> None:
    base = generate_rgbir(n_per_class=3)
    thermal = generate_rgbir(n_per_class=3, thermal=True)
    shifted = generate_rgbir(n_per_class=3, shift=2)
    assert np.array_equal(base.rgb, thermal.rgb) and np.array_equal(base.rgb, shifted.rgb)
    assert not np.array_equal(base.ir, thermal.ir)
    assert thermal.meta["ir_kind"] == "lwir"
    # each shifted IR image is its unshifted one rolled by at most 2 px
    for a, b in zip(base.ir[..., 0], shifted.ir[..., 0]):
        assert any(np.array_equal(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in range(-2, 3) for dx in range(-2, 3))


def test_two_thousand_images_are_fast() -> None:
    import time

    start = time.perf_counter()
    ds = generate_rgbir()
    assert len(ds) == 2000
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("domain", ["rgb", "ir"])
def test_linear_model_learns_both_domains(domain: str) -> None:
    from sklearn.linear_model import RidgeClassifier

    ds = generate_rgbir(n_per_class=20, seed=3)
    images = (ds.rgb if domain == "rgb" else ds.ir).astype(np.float32) / 255.0
    # |FFT| of the mean-free image: invariant to the random object position
    features = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True), axes=(1, 2))).reshape(
        len(images), -1
    )
    view = ds.domain(domain)
    train, test = view.indices("train"), view.indices("test")
    model = RidgeClassifier(alpha=10.0).fit(features[train], ds.labels[train])
    assert model.score(features[test], ds.labels[test]) > 0.35  # chance is 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 11}, "num_classes"),
        ({"n_per_class": 0}, "n_per_class"),
        ({"size": 4}, "size"),
        ({"shift": -1}, "shift"),
        ({"class_material_bias": 2.0}, "class_material_bias"),
    ],
)
def test_bad_generator_arguments_raise(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        generate_rgbir(**kwargs)  # type: ignore[arg-type]


def test_class_material_bias_ties_colour_to_class() -> None:
    tied = generate_rgbir(n_per_class=20, class_material_bias=1.0)
    free = generate_rgbir(n_per_class=20)

    def class_spread(ds: PairedDataset) -> float:
        centre = ds.rgb[:, 12:20, 12:20].reshape(len(ds), -1, 3).mean(axis=1)
        return float(np.mean([centre[ds.labels == c].std(axis=0).mean() for c in range(10)]))

    assert class_spread(tied) < class_spread(free)


def test_writer_rejects_bad_arguments(small_pair: PairedDataset, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="layout"):
        write_paired(small_pair, tmp_path, "E")
    with pytest.raises(DatasetError, match="IR tag"):
        write_paired(small_pair, tmp_path, "A", ir_tag="xray")
    with pytest.raises(DatasetError, match="distinct ids"):
        write_paired(small_pair, tmp_path, "A", ids=["same"] * len(small_pair))


def test_writer_layouts_on_disk(small_pair: PairedDataset, tmp_path: Path) -> None:
    write_paired(small_pair, tmp_path / "a", "A", ext="tiff")
    split = ("train", "val", "test")[int(small_pair.split[0])]
    assert (tmp_path / "a" / split / "disk" / "s_000000_rgb.tiff").is_file()
    assert (tmp_path / "a" / split / "disk" / "s_000000_nir.tiff").is_file()
    write_paired(small_pair, tmp_path / "b", "B", with_split=False)
    assert (tmp_path / "b" / "rgb" / "disk" / "s_000000.png").is_file() and (
        tmp_path / "b" / "nir" / "disk" / "s_000000.png"
    ).is_file()
    write_paired(small_pair, tmp_path / "c", "C")
    header = (tmp_path / "c" / "manifest.csv").read_text().splitlines()[0]
    assert header == "id,label,split,rgb,ir"
    assert write_paired(small_pair, tmp_path / "d.h5", "D").name == "d.h5"


def test_object_and_background_materials_differ_visibly_in_both_views() -> None:
    from advkit.datasets.synthetic import _PARTNER_COUNT, _PARTNERS, _REFLECTANCE

    for material, (row, count) in enumerate(zip(_PARTNERS, _PARTNER_COUNT, strict=True)):
        partners = row[:count]
        assert count >= 3 and material not in partners
        assert np.all(np.abs(_REFLECTANCE[partners, 3] - _REFLECTANCE[material, 3]) >= 0.09)
        assert np.all(np.linalg.norm(_REFLECTANCE[partners, :3] - _REFLECTANCE[material, :3], axis=1) >= 0.09)
