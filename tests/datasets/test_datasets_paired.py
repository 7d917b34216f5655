"""Paired RGB-IR layouts A-D: round trips through write_paired, the EPFL tree, and every validation rule."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from advkit.datasets import SPLITS, PairedDataset, open_dataset
from advkit.datasets.readers import ImageFiles
from advkit.datasets.synthetic import write_paired
from advkit.errors import DatasetError

Content = Callable[[PairedDataset], dict[bytes, tuple[bytes, str, int]]]


def _png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.mark.parametrize(
    ("layout", "ext"),
    [("A", "png"), ("A", "tiff"), ("A", "npy"), ("B", "png"), ("B", "tif"), ("C", "png"), ("D", "npz"), ("D", "h5")],
)
def test_round_trip_preserves_pairs_labels_and_split(
    small_pair: PairedDataset, pair_content: Content, tmp_path: Path, layout: str, ext: str
) -> None:
    out = write_paired(small_pair, tmp_path / "data", layout, ext=ext)
    back = open_dataset(f"paired:{out}")
    assert isinstance(back, PairedDataset) and len(back) == len(small_pair)
    assert back.rgb.shape == small_pair.rgb.shape and back.ir.shape == small_pair.ir.shape
    assert list(back.class_names) == list(small_pair.class_names)  # classes.txt / class_names keep the order
    assert pair_content(back) == pair_content(small_pair)
    x_rgb, y_rgb = back.domain("rgb").batch(back.domain("rgb").indices("test"))
    x_ir, y_ir = back.domain("ir").batch(back.domain("ir").indices("test"))
    assert tuple(x_rgb.shape[1:]) == (3, 16, 16) and tuple(x_ir.shape[1:]) == (1, 16, 16)
    assert np.array_equal(y_rgb.numpy(), y_ir.numpy())


@pytest.mark.parametrize("layout", ["A", "B", "C", "D"])
def test_without_split_both_domains_get_the_same_seeded_split(
    small_pair: PairedDataset, tmp_path: Path, layout: str
) -> None:
    out = write_paired(small_pair, tmp_path / "data", layout, with_split=False)
    first, second = open_dataset(f"paired:{out}"), open_dataset(f"paired:{out}")
    assert np.array_equal(first.split, second.split)
    assert np.array_equal(first.domain("rgb").split, first.domain("ir").split)
    assert len(first.domain("ir").indices("test")) == 10  # 20% of 3 per class, rounded, x 10 classes
    reseeded = open_dataset(f"paired:{out}", seed=5, test_fraction=0.4)
    assert len(reseeded.domain("rgb").indices("test")) == 10 and not np.array_equal(reseeded.split, first.split)


def test_stems_with_underscores_pair_on_the_last_tag(tmp_path: Path) -> None:
    ids = ["a_b_c", "a_b", "x_rgb_y", "plain"]
    for i, sample_id in enumerate(ids):
        _png(tmp_path / "cls" / f"{sample_id}_rgb.png", np.full((4, 4, 3), i, np.uint8))
        _png(
            tmp_path / "cls" / f"{sample_id}_{('nir', 'ir', 'lwir', 'thermal')[i]}.png",
            np.full((4, 4), 10 + i, np.uint8),
        )
    ds = open_dataset(f"paired-a:{tmp_path}", test_fraction=0.0)
    assert len(ds) == 4
    for i in range(4):
        assert int(ds.ir[i][0, 0, 0]) == int(ds.rgb[i][0, 0, 0]) + 10  # each RGB met its own IR partner


def test_epfl_nirscene_tree_loads_as_is(epfl_dir: Path) -> None:
    ds = open_dataset(f"paired:{epfl_dir}")
    assert ds.name.startswith("paired-a:")
    assert list(ds.class_names) == ["country", "field", "forest"]
    assert ds.rgb.shape == (12, 12, 16, 3) and ds.ir.shape == (12, 12, 16, 1)
    assert [p.name for p in ds.rgb.paths[:2]] == ["0001_rgb.tiff", "0002_rgb.tiff"]
    assert [p.name for p in ds.ir.paths[:2]] == ["0001_nir.tiff", "0002_nir.tiff"]
    import tifffile

    assert np.array_equal(ds.ir[5][..., 0], tifffile.imread(epfl_dir / "field" / "0006_nir.tiff"))
    assert np.bincount(ds.labels).tolist() == [4, 4, 4]
    assert np.array_equal(ds.split, open_dataset(f"paired-a:{epfl_dir}").split)


@pytest.mark.parametrize("remove", ["s_000004_nir.png", "s_000007_rgb.png"])
def test_unpaired_files_raise_listing_them(small_pair: PairedDataset, tmp_path: Path, remove: str) -> None:
    root = write_paired(small_pair, tmp_path / "a", "A", with_split=False)
    victim = next(root.rglob(remove))
    victim.unlink()
    partner = remove.replace("_nir", "_rgb") if "_nir" in remove else remove.replace("_rgb", "_nir")
    with pytest.raises(DatasetError, match=f"unpaired files: .*{partner}"):
        open_dataset(f"paired-a:{root}")


def test_two_ir_files_for_one_id_raise(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "a", "A", with_split=False)
    nir = next(root.rglob("s_000001_nir.png"))
    shutil.copy(nir, nir.with_name("s_000001_ir.png"))
    with pytest.raises(DatasetError, match="2 IR files|1 RGB and 2 IR"):
        open_dataset(f"paired-a:{root}")


def test_untagged_file_in_layout_a_raises(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "a", "A", with_split=False)
    _png(root / "disk" / "stray.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="stray.png"):
        open_dataset(f"paired-a:{root}")


def test_unpaired_in_layout_b_raises(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "b", "B", with_split=False, ir_tag="ir")
    (root / "ir" / "ring" / "s_000004.png").unlink()
    with pytest.raises(DatasetError, match="rgb/ring/s_000004.png \\(no IR partner\\)"):
        open_dataset(f"paired-b:{root}")


def test_layout_b_without_its_ir_tree_is_not_an_image_folder(small_pair: PairedDataset, tmp_path: Path) -> None:
    """A bare path with only rgb/ was read as an image folder of one class, "rgb"."""
    import shutil

    root = write_paired(small_pair, tmp_path / "b", "B", with_split=False, ir_tag="ir")
    shutil.rmtree(root / "ir")
    with pytest.raises(DatasetError, match="holds an rgb/ tree without its IR partner"):
        open_dataset(str(root))


def _mismatched_pair(root: Path) -> Path:
    for i in range(2):
        _png(root / "cls" / f"p_{i}_rgb.png", np.zeros((32, 32, 3), np.uint8))
        _png(root / "cls" / f"p_{i}_nir.png", np.zeros((32, 32) if i else (30, 30), np.uint8))
    return root


def test_pair_size_mismatch_raises_unless_align_resize(tmp_path: Path) -> None:
    root = _mismatched_pair(tmp_path)
    with pytest.raises(DatasetError, match="RGB 32x32 vs IR 30x30 for id p_0"):
        open_dataset(f"paired-a:{root}")
    ds = open_dataset(f"paired-a:{root}", align="resize")
    assert ds.ir.shape == (2, 32, 32, 1) and ds.ir[0].shape == (32, 32, 1)
    assert ds.meta["alignment"] == "resized"
    with pytest.raises(DatasetError, match="align must be"):
        open_dataset(f"paired-a:{root}", align="loose")


def test_resizing_pairs_of_different_aspect_warns(tmp_path: Path) -> None:
    _png(tmp_path / "cls" / "p_rgb.png", np.zeros((32, 32, 3), np.uint8))
    _png(tmp_path / "cls" / "p_nir.png", np.zeros((30, 20), np.uint8))
    with pytest.warns(UserWarning, match="aspect ratios differ"):
        ds = open_dataset(f"paired-a:{tmp_path}", align="resize", test_fraction=0.0)
    assert ds.ir[0].shape == (32, 32, 1)


def test_shared_size_resizes_both_domains(small_pair: PairedDataset, tmp_path: Path) -> None:
    for layout in ("A", "D"):
        out = write_paired(small_pair, tmp_path / layout, layout)
        ds = open_dataset(f"paired:{out}", size=8)
        assert ds.rgb.shape == (30, 8, 8, 3) and ds.ir.shape == (30, 8, 8, 1)
        assert np.asarray(ds.ir[3]).shape == (8, 8, 1)


def test_ir_with_three_identical_channels_collapses(tmp_path: Path) -> None:
    ir = np.random.default_rng(4).integers(0, 256, (6, 6), dtype=np.uint8)
    _png(tmp_path / "c" / "k_rgb.png", np.zeros((6, 6, 3), np.uint8))
    _png(tmp_path / "c" / "k_nir.png", np.stack([ir] * 3, axis=2))
    ds = open_dataset(f"paired-a:{tmp_path}", test_fraction=0.0)
    assert ds.ir.shape == (1, 6, 6, 1) and np.array_equal(ds.ir[0][..., 0], ir)
    colour = np.stack([ir, ir, 255 - ir], axis=2)
    _png(tmp_path / "c" / "k_nir.png", colour)
    with pytest.raises(DatasetError, match="k_nir.png has 3 different channels"):
        open_dataset(f"paired-a:{tmp_path}", test_fraction=0.0)


def test_float_tiff_ir_outside_the_unit_range_fails_at_open(tmp_path: Path) -> None:
    """32-bit float IR in Kelvin opened fine and failed only at the first batch."""
    import tifffile

    kelvin = np.linspace(250.0, 350.0, 36, dtype=np.float32).reshape(6, 6)
    for i in range(2):
        _png(tmp_path / "c" / f"k{i}_rgb.png", np.zeros((6, 6, 3), np.uint8))
        tifffile.imwrite(tmp_path / "c" / f"k{i}_nir.tif", kelvin / 350.0)
    ds = open_dataset(f"paired-a:{tmp_path}", test_fraction=0.0)
    assert ds.ir.dtype == np.float32 and np.allclose(ds.ir[1][..., 0], kelvin / 350.0)
    tifffile.imwrite(tmp_path / "c" / "k0_nir.tif", kelvin)
    with pytest.raises(DatasetError, match=r"k0_nir\.tif holds float pixels that are not all in \[0, 1\]"):
        open_dataset(f"paired-a:{tmp_path}", test_fraction=0.0)


def test_gray_rgb_image_is_a_wrong_channel_count(tmp_path: Path) -> None:
    _png(tmp_path / "c" / "k_rgb.png", np.zeros((6, 6), np.uint8))
    _png(tmp_path / "c" / "k_nir.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(DatasetError, match="RGB images need 3 channels: c/k_rgb.png \\(1\\)"):
        open_dataset(f"paired-a:{tmp_path}")


def test_folder_without_images_raises(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image pairs"):
        open_dataset(f"paired-a:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="no paired RGB-IR layout"):
        open_dataset(f"paired:{tmp_path / 'empty'}")


def test_corrupt_pair_file_is_named(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "a", "A", with_split=False)
    next(root.rglob("s_000002_nir.png")).write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="s_000002_nir.png"):
        open_dataset(f"paired-a:{root}")


# ------------------------------------------------------------------------------------------------ manifest (C)


def _manifest(root: Path, rows: list[str], header: str = "id,label,split,rgb,ir") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_manifest_integer_labels_classes_txt_and_boxes(tmp_path: Path) -> None:
    rgb = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    _png(tmp_path / "img" / "scene_rgb.png", rgb)
    _png(tmp_path / "img" / "scene_ir.png", rgb[..., 1])
    root = _manifest(
        tmp_path,
        [
            "crop_1,1,train,img/scene_rgb.png,img/scene_ir.png,2,3,6,7",
            "crop_2,0,test,img/scene_rgb.png,img/scene_ir.png,0,0,4,4",
        ],
        header="id,label,split,rgb,ir,x0,y0,x1,y1",
    )
    (root / "classes.txt").write_text("background\nperson\n")
    ds = open_dataset(str(root))
    assert list(ds.class_names) == ["background", "person"] and ds.labels.tolist() == [1, 0]
    assert ds.split.tolist() == [SPLITS["train"], SPLITS["test"]]
    assert ds.rgb.shape == (2, 4, 4, 3)
    assert np.array_equal(ds.rgb[0], rgb[3:7, 2:6]) and np.array_equal(ds.ir[0][..., 0], rgb[3:7, 2:6, 1])


def test_manifest_name_labels_without_classes_txt(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "c", "C")
    (root / "classes.txt").unlink()
    ds = open_dataset(f"paired-c:{root / 'manifest.csv'}")
    assert list(ds.class_names) == sorted(small_pair.class_names)


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["a,x,train,missing_rgb.png,missing_ir.png"], "id,label,split,rgb,ir", "missing files missing_rgb.png"),
        (["a,x,img/r.png"], "id,label,rgb", "missing columns ir"),
        (["a,x,train,img/r.png,img/i.png", "a,x,test,img/r.png,img/i.png"], "id,label,split,rgb,ir", "duplicate ids a"),
        (["a,x,holdout,img/r.png,img/i.png"], "id,label,split,rgb,ir", "split must be train, val or test"),
        (["a,x,train,img/r.png,img/i.png", "b,x,train"], "id,label,split,rgb,ir",  # was "missing files ., ."
         r"line\(s\) 3 leave id, label, rgb, ir partly empty"),
    ],
)
def test_manifest_errors(tmp_path: Path, rows: list[str], header: str, message: str) -> None:
    _png(tmp_path / "img" / "r.png", np.zeros((4, 4, 3), np.uint8))
    _png(tmp_path / "img" / "i.png", np.zeros((4, 4), np.uint8))
    root = _manifest(tmp_path, rows, header)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-c:{root}")


def test_manifest_rows_longer_than_the_header_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "r.png", np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    _png(tmp_path / "img" / "i.png", np.zeros((4, 4), np.uint8))
    # box values under a header without box columns were dropped: the pair loaded uncropped
    root = _manifest(tmp_path, ["a,x,train,img/r.png,img/i.png,0,0,2,2", "b,x,test,img/r.png,img/i.png"])
    with pytest.raises(DatasetError, match=r"line\(s\) 2 have more fields than the header"):
        open_dataset(f"paired-c:{root}")
    # an empty trailing field loses nothing
    root = _manifest(tmp_path, ["a,x,train,img/r.png,img/i.png,", "b,x,test,img/r.png,img/i.png"])
    assert open_dataset(f"paired-c:{root}").rgb.shape == (2, 4, 4, 3)


def test_manifest_boxes_on_pairs_of_different_sizes_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "r.png", np.zeros((32, 32, 3), np.uint8))
    _png(tmp_path / "img" / "i.png", np.zeros((16, 16), np.uint8))
    rows = ["a,x,train,img/r.png,img/i.png,0,0,8,8", "b,x,test,img/r.png,img/i.png,8,8,16,16"]
    root = _manifest(tmp_path, rows, header="id,label,split,rgb,ir,x0,y0,x1,y1")
    # the same box on a 32x32 and a 16x16 image crops two different scenes: it loaded as an aligned pair
    with pytest.raises(DatasetError, match="pair size mismatch: RGB 32x32 vs IR 16x16 for id a"):
        open_dataset(f"paired-c:{root}")
    with pytest.raises(DatasetError, match=r"crop boxes on pairs of different sizes \(ids a, b\)"):
        open_dataset(f"paired-c:{root}", align="resize")


# -------------------------------------------------------------------------------------------------- arrays (D)


def _arrays(n: int = 4, **overrides: object) -> dict[str, object]:
    rng = np.random.default_rng(9)
    arrays: dict[str, object] = {
        "rgb": rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8),
        "ir": rng.integers(0, 65536, (n, 6, 6), dtype=np.uint16),
        "label": np.arange(n) % 2,
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def test_npz_uint16_ir_without_optional_keys(tmp_path: Path) -> None:
    arrays = _arrays()
    np.savez(tmp_path / "x.npz", **arrays)
    ds = open_dataset(str(tmp_path / "x.npz"))
    assert ds.ir.dtype == np.uint16 and ds.ir.shape == (4, 6, 6, 1)
    assert list(ds.class_names) == ["0", "1"] and ds.meta["format"] == "paired-d"


def test_h5_float_ir_rescaled_by_meta_range(tmp_path: Path) -> None:
    import h5py

    temperature = np.linspace(250.0, 350.0, 4 * 36, dtype=np.float32).reshape(4, 6, 6, 1)
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        for key, value in _arrays(ir=temperature).items():
            handle[key] = value
        handle["meta"] = json.dumps({"ir_kind": "lwir", "ir_range": [250, 350]})
        handle["class_names"] = np.array([b"cold", b"hot"])
    ds = open_dataset(f"paired-d:{tmp_path / 't.h5'}")
    assert ds.ir.dtype == np.float32 and float(ds.ir.min()) == 0.0 and abs(float(ds.ir.max()) - 1.0) < 1e-6
    assert ds.meta["ir_kind"] == "lwir" and list(ds.class_names) == ["cold", "hot"]


def test_npz_integer_ir_rescaled_by_meta_range(tmp_path: Path) -> None:
    """12-bit values in uint16 were divided by 65535 despite ir_range [0, 4095]: every IR image nearly black."""
    twelve_bit = np.linspace(0, 4095, 4 * 36).round().astype(np.uint16).reshape(4, 6, 6)
    np.savez(tmp_path / "x.npz", **_arrays(ir=twelve_bit, meta=np.array(json.dumps({"ir_range": [0, 4095]}))))
    ds = open_dataset(f"paired-d:{tmp_path / 'x.npz'}")
    assert ds.ir.dtype == np.float32 and float(ds.ir.max()) == 1.0
    assert np.allclose(ds.ir[..., 0], twelve_bit / 4095.0, atol=1e-6)
    x, _ = ds.domain("ir").batch([3])
    assert abs(float(x.max()) - 1.0) < 1e-6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": None}, "missing keys label"),
        ({"rgb": np.zeros((4, 6, 6, 3), np.float32)}, "key 'rgb' must be uint8"),
        ({"ir": np.zeros((4, 6, 6), np.int32)}, "key 'ir' must be"),
        ({"label": np.zeros(4, np.float32)}, "key 'label' must be integers"),
        ({"split": np.array([0, 1, 2, 7])}, "key 'split' must hold 0"),
        ({"ir": np.full((4, 6, 6), 3.0, np.float32)}, "float IR must lie in"),
        ({"ir": np.full((4, 6, 6), np.nan, np.float32)}, "float IR holds NaN or infinite values"),  # passed the range check
        ({"ir": np.full((4, 6, 6), 5000, np.uint16), "meta": np.array(json.dumps({"ir_range": [0, 4095]}))},
         r"bad\.npz: IR values 5000\.\.5000 reach outside meta ir_range \[0, 4095\]; fix the range$"),
        ({"ir": np.full((4, 6, 6), 3.0, np.float32), "meta": np.array(json.dumps({"ir_range": [0, 2]}))},
         r"IR values 3\.\.3 reach outside meta ir_range \[0, 2\]"),
        ({"ir": np.zeros((4, 5, 5), np.uint8)}, "RGB 6x6 vs IR 5x5"),
        ({"ids": np.array(["a", "a", "b", "c"])}, "distinct strings"),
        ({"meta": np.array("{not json")}, "not valid JSON"),
        ({"label": np.array([0, 1, -1, 1])}, r"bad\.npz: labels must be >= 0, got -1$"),
        ({"label": np.array([0, 1, -1, 1]), "split": np.array([0, 0, 2, 2])}, "labels must be >= 0, got -1"),
    ],
)
def test_array_file_errors(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **_arrays(**overrides))
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-d:{tmp_path / 'bad.npz'}")


def test_h5_missing_key_is_reported(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "m.hdf5", "w") as handle:
        handle["rgb"] = np.zeros((2, 4, 4, 3), np.uint8)
        handle["label"] = np.zeros(2, np.int64)
    with pytest.raises(DatasetError, match="missing keys ir"):
        open_dataset(f"paired-d:{tmp_path / 'm.hdf5'}")


@pytest.mark.parametrize("damage", ["text", "truncated", "npy"])
@pytest.mark.parametrize("spec", ["paired-d:{}", "{}"])  # read, and detected from a bare path
def test_npz_that_is_not_a_zip_says_so(tmp_path: Path, damage: str, spec: str) -> None:
    """A text file renamed .npz was "contains pickled (object) data"; a truncated one "File is not a zip file"."""
    path = tmp_path / "bad.npz"
    np.savez(path, **_arrays())
    if damage == "text":
        path.write_text("id,label\n0,cat\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        np.save(tmp_path / "a.npy", np.zeros(3))
        (tmp_path / "a.npy").replace(path)
    message = r"bad\.npz is not a valid \.npz file \(not a zip archive: truncated, or another file renamed\)$"
    with pytest.raises(DatasetError, match=message):
        open_dataset(spec.format(path))


def test_npz_with_object_arrays_is_not_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", **_arrays(ids=np.array(["a", 1, None, 2.0], dtype=object)))
    with pytest.raises(DatasetError, match="obj.npz"):
        open_dataset(f"paired-d:{tmp_path / 'obj.npz'}")


def test_lazy_sources_read_on_demand(small_pair: PairedDataset, tmp_path: Path) -> None:
    root = write_paired(small_pair, tmp_path / "b", "B")
    ds = open_dataset(f"paired-b:{root}")
    assert isinstance(ds.rgb, ImageFiles) and isinstance(ds.ir, ImageFiles)
    next(root.rglob("s_000000.png")).unlink()  # nothing was read at open time beyond headers
    index = next(i for i, p in enumerate(ds.rgb.paths) if p.name == "s_000001.png")
    assert ds.rgb[index].shape == (16, 16, 3)


# ------------------------------------------------------------------------- labels, names and boxes from a review


def _labelled_manifest(root: Path, labels: list[str], box: str = "") -> Path:
    """A layout-C manifest of one RGB-IR pair of files per label (8x8), with an optional box on every row."""
    _png(root / "img" / "r.png", np.zeros((8, 8, 3), np.uint8))
    _png(root / "img" / "i.png", np.zeros((8, 8), np.uint8))
    header = "id,label,split,rgb,ir" + (",x0,y0,x1,y1" if box else "")
    return _manifest(root, [f"s{k},{label},,img/r.png,img/i.png{',' + box if box else ''}" for k, label in
                            enumerate(labels)], header)


@pytest.mark.parametrize(("labels", "message"), [
    # one of these turned every label into a name, sorted as text: '0', '1', '10', '11', '2', ... renumbered
    ([*map(str, range(5)), "5.0", *map(str, range(6, 12))], r"label '5\.0' for id s5 is not a class index; numeric "
                                                             "labels must be whole numbers >= 0$"),
    (["-1", *map(str, range(1, 12))], "label '-1' for id s0 is not a class index"),
    (["0", "1", "cat", "2"], r"labels mix class names \('cat' for id s2\) and numbers \('0' for id s0\); use one or"),
])
def test_manifest_labels_mixing_numbers_and_names_are_refused(tmp_path: Path, labels: list[str], message: str) -> None:
    root = _labelled_manifest(tmp_path / "c", labels)
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-c:{root}")


def test_manifest_names_listed_in_classes_txt_may_look_like_numbers(tmp_path: Path) -> None:
    root = _labelled_manifest(tmp_path / "c", ["cat", "7", "cat", "7"])
    (root / "classes.txt").write_text("7\ncat\n")
    ds = open_dataset(f"paired-c:{root}")
    assert list(ds.class_names) == ["7", "cat"] and ds.labels.tolist() == [1, 0, 1, 0]
    numbered = _labelled_manifest(tmp_path / "n", ["0", "1", "2", "10"])
    with pytest.raises(DatasetError, match="reach 10 but no image has label 3"):
        open_dataset(f"paired-c:{numbered}")


@pytest.mark.parametrize(("top", "message"), [
    (255, r"manifest.csv: the labels reach 255 but no image has label 2 \(nor 252 other labels below it\); is a "
          r"label mistyped\? \(list the classes in classes.txt"),  # was a 256-class dataset
    (10**12, r"reach 1000000000000 but no image has label 2 \(nor 999999999997 other"),  # was a MemoryError
    (10**30, r"label 1000000000000000000000000000000 for id s0 is too large to be a class index$"),  # OverflowError
])
def test_manifest_huge_or_lone_large_index_is_refused(tmp_path: Path, top: int, message: str) -> None:
    root = _labelled_manifest(tmp_path / "c", [str(top), "0", "1", "0", "1"])
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-c:{root}")


@pytest.mark.parametrize("box", ["0,0,inf,4", "0.9,0,4.9,4", "0,0,nan,4", "0,0,1e400,4"])
def test_manifest_boxes_must_be_whole_pixels(tmp_path: Path, box: str) -> None:
    """inf was an OverflowError traceback; 0.9 was truncated to 0 without a word."""
    root = _labelled_manifest(tmp_path / "c", ["0", "1"], box)
    message = rf"manifest.csv:2: box x0,y0,x1,y1 must be 4 whole numbers of pixels, got {box}$"
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-c:{root}")


def test_manifest_whole_float_boxes_and_huge_boxes(tmp_path: Path) -> None:
    ds = open_dataset(f"paired-c:{_labelled_manifest(tmp_path / 'c', ['0', '1'], '0.0,0,4.0,4')}")
    assert ds.rgb.shape == (2, 4, 4, 3)
    huge = _labelled_manifest(tmp_path / "h", ["0", "1"], "0,0,1e300,4")  # was an int64 OverflowError
    with pytest.raises(DatasetError, match="crop boxes reach outside the images"):
        open_dataset(f"paired-c:{huge}")


def _float_ir_meta(ir_range: object) -> dict[str, object]:
    return {"ir": np.full((4, 6, 6), 50.0, np.float32), "meta": np.array(json.dumps({"ir_range": ir_range}))}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"label": np.array([0, 1, 255, 1])}, r"bad.npz: the labels reach 255 but no image has label 2 \(nor 252 other "
                                          r"labels below it\); is a label damaged\? \(store class_names"),
    ({"label": np.array([0, 1, 2**40, 1])}, r"reach 1099511627776 but no image has label 2"),  # was a MemoryError
    ({"label": np.array([0, 1, 2**63 + 5, 1], np.uint64)}, "label 9223372036854775813 is too large"),  # was -922...
    ({"class_names": np.array(["a", "a"])}, r"bad.npz \(class_names\): class names must be distinct; repeated: 'a'$"),
    (_float_ir_meta([0, float("inf")]), r"meta ir_range needs finite lo < hi, got \[0, Infinity\]$"),  # IR was all 0
    (_float_ir_meta([-1e308, 1e308]), "meta ir_range needs finite lo < hi"),  # hi - lo overflows to inf
    (_float_ir_meta([float("nan"), 1]), "meta ir_range needs finite lo < hi"),
])
def test_array_file_labels_names_and_ir_range_from_a_review(tmp_path: Path, overrides: dict[str, object],
                                                             message: str) -> None:
    np.savez(tmp_path / "bad.npz", **_arrays(**overrides))
    with pytest.raises(DatasetError, match=message):
        open_dataset(f"paired-d:{tmp_path / 'bad.npz'}")


def test_h5_lone_large_label_is_refused(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "big.h5", "w") as handle:
        for key, value in _arrays(label=np.array([0, 1, 2**40, 1])).items():
            handle[key] = value
    with pytest.raises(DatasetError, match="big.h5: the labels reach 1099511627776 but no image has label 2"):
        open_dataset(f"paired-d:{tmp_path / 'big.h5'}")
    with h5py.File(tmp_path / "big.h5", "r+") as handle:  # declared classes may have no images
        handle["class_names"] = np.array([b"a", b"b", b"c"])
        del handle["label"]
        handle["label"] = np.array([0, 2, 0, 2])
    assert list(open_dataset(f"paired-d:{tmp_path / 'big.h5'}").class_names) == ["a", "b", "c"]
