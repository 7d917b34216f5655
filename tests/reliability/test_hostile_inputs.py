"""Hostile and broken inputs, property-based: every case ends in a clear one-line advkit error or a correct result,
never another exception (a traceback in the CLI), a hang or a silently wrong number.

Covers image tensors given to attacks, the model wrapper and the perturbations (NaN, inf, out of range, every
dtype, zero-size, huge values and sizes), truncated or corrupted image and dataset files for the readers, and
report files with missing or wrong-typed datasets and attributes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advkit.attacks import create_attack
from advkit.datasets import ImageDataset, PairedDataset, open_dataset
from advkit.datasets.synthetic import write_paired
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper, QueryCounter
from advkit.perturbations import corrupt, perturbation_names
from advkit.report import Report

SCALE = int(os.environ.get("ADVKIT_FUZZ_SCALE", "1"))  # e.g. 20 for a deeper search than the suite's quick one
FEW = settings(max_examples=30 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
SPECIAL = [math.nan, math.inf, -math.inf, -1e30, 1e30, -0.25, 1.25, 1e-45]


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text, f"not a one-line message: {text!r}"


@st.composite
def image_batches(draw: st.DrawFn, size: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """Mostly well-formed (B, C, H, W) batches, each with a chance of one hostile property."""
    b = draw(st.sampled_from([1, 2, 3, 0]))
    c = draw(st.sampled_from([1, 1, 3, 2]))
    h, w = draw(st.sampled_from([size, size, (0, size[1]), (1, 1), (size[0] + 1, size[1])]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(b, c, h, w, generator=gen)
    if x.numel() and draw(st.booleans()):
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIAL))
    dtype = draw(st.sampled_from(DTYPES[:2] * 3 + DTYPES[2:]))
    if dtype in (torch.uint8, torch.int64):
        x = (x.clamp(0, 1) * 255).nan_to_num(0).to(dtype)
    else:
        x = x.to(dtype)
    if draw(st.integers(0, 9)) == 0:  # an extra or a missing dimension
        x = x[None] if draw(st.booleans()) else x.flatten(1)
    return x


def _valid_images(x: torch.Tensor, model: ModelWrapper) -> bool:
    pre = model.preprocessing
    return (x.dim() == 4 and x.shape[0] > 0 and x.is_floating_point() and bool(torch.isfinite(x).all())
            and float(x.min()) >= 0 and float(x.max()) <= 1 and tuple(x.shape[2:]) == tuple(pre.input_size)
            and x.shape[1] in (1, pre.channels))


ATTACKS = {"fgsm": {"eps": 0.1}, "pixle": {"restarts": 2, "max_iterations": 2},
           "white-pixle": {"restarts": 2, "max_iterations": 2}, "bim": {"eps": 0.1, "steps": 2}}


@FEW
@given(x=image_batches(), name=st.sampled_from(sorted(ATTACKS)), label_kind=st.sampled_from(["ok", "ok", "ok", "float", "range", "shape"]),
       budget=st.sampled_from([None, None, 1, 3]))
def test_attacks_on_hostile_tensors(digits_model: ModelWrapper, x: torch.Tensor, name: str, label_kind: str,
                                    budget: int | None) -> None:
    n = x.shape[0] if x.dim() else 0
    y = torch.arange(n) % 10
    y = {"ok": y, "float": y.float(), "range": y + 10, "shape": y[None]}[label_kind]
    attack = create_attack(name, **ATTACKS[name])
    try:
        result = attack(digits_model, x, y, max_queries=budget)
    except AdvkitError as exc:
        _one_line(exc)
        return
    assert _valid_images(x, digits_model) and label_kind == "ok", "an invalid input was accepted"
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    with torch.no_grad():
        pred = digits_model.logits(result.x_adv.float()).argmax(1)
    assert torch.equal(result.success, pred.ne(y)) and torch.equal(result.adv_pred, pred)
    if budget is not None:
        assert int(result.queries.max()) <= budget


@FEW
@given(x=image_batches())
def test_model_wrapper_on_hostile_tensors(digits_model: ModelWrapper, x: torch.Tensor) -> None:
    try:
        logits = digits_model.logits(x)
        with digits_model.counting(QueryCounter(max(len(x), 1) if x.dim() else 1)):
            counted = digits_model(x) if x.dim() == 4 and len(x) > 0 else logits
    except AdvkitError as exc:
        _one_line(exc)
        return
    assert x.dim() == 4 and tuple(x.shape[2:]) == (8, 8) and x.shape[1] == 1, "a wrong shape was accepted"
    assert x.is_floating_point(), "integer pixels would be read as values far outside [0, 1]"
    assert logits.shape == (x.shape[0], 10) and logits.dtype == torch.float32
    torch.testing.assert_close(counted, logits, rtol=0, atol=0, equal_nan=True)
    if x.numel() and bool(torch.isfinite(x).all()):
        assert bool(torch.isfinite(logits).all())


@settings(max_examples=40 * SCALE, deadline=None)
@given(x=image_batches(size=(9, 7)), name=st.sampled_from(perturbation_names()), severity=st.sampled_from([1, 3, 5, 0, 6]),
       tiny=st.booleans())
def test_perturbations_on_hostile_tensors(x: torch.Tensor, name: str, severity: int, tiny: bool) -> None:
    if tiny and x.dim() == 4:  # 1-2 px images stress kernels, zooms and crops
        x = x[..., :2, :1]
    try:
        out = corrupt(x, name, severity, generator=torch.Generator().manual_seed(0))
    except AdvkitError as exc:
        _one_line(exc)
        return
    assert x.dim() == 4 and x.is_floating_point() and 1 <= severity <= 5
    assert out.shape == x.shape and out.dtype == x.dtype
    if x.numel():
        assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1, name
        assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1, "bad pixels accepted"


# ---------------------------------------------------------------------------------------- files for the readers


def _damage(data: bytes, how: str, where: float, value: int) -> bytes:
    """Truncate at a fraction, flip a byte there, or append junk."""
    cut = min(int(where * len(data)), len(data) - 1)
    if how == "truncate":
        return data[:cut]
    if how == "flip":
        return data[:cut] + bytes([data[cut] ^ (value or 1)]) + data[cut + 1:]
    if how == "zero-tail":
        return data[:cut] + bytes(len(data) - cut)
    return data + bytes([value]) * 16


DAMAGE = dict(how=st.sampled_from(["truncate", "flip", "zero-tail", "append"]), where=st.floats(0, 1), value=st.integers(0, 255))


def _check_dataset(spec: str, **params: object) -> None:
    """Open a dataset and read every image: a one-line DatasetError, or finite pixels in [0, 1] and valid labels."""
    try:
        ds = open_dataset(spec, **params)
        views = [ds.domain("rgb"), ds.domain("ir")] if isinstance(ds, PairedDataset) else [ds]
        for view in views:
            assert isinstance(view, ImageDataset)
            index = np.arange(len(view.labels))
            x, y = view.batch(index)
            assert x.shape[0] == len(index) and bool(torch.isfinite(x).all()), "non-finite pixels read"
            assert float(x.min()) >= 0 and float(x.max()) <= 1, "pixels outside [0, 1] read"
            assert bool(((y >= 0) & (y < view.num_classes)).all()), "labels outside the classes read"
    except AdvkitError as exc:
        _one_line(exc)


def _imagefolder(root: Path, dtype: str) -> list[Path]:
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for cls in ("cat", "dog"):
        for i, ext in enumerate(("png", "tif", "npy")):
            path = root / cls / f"{i}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            if ext == "png":
                Image.fromarray(image).save(path)
            elif ext == "tif":
                tifffile.imwrite(path, image if dtype == "uint8" else image.astype(np.float32) / 255, photometric="rgb")
            else:
                np.save(path, image if dtype == "uint8" else image.astype(np.float32) / 255)
            files.append(path)
    return files


@FEW
@given(file=st.integers(0, 5), dtype=st.sampled_from(["uint8", "float32"]), **DAMAGE)
def test_damaged_image_files(file: int, dtype: str, how: str, where: float, value: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = _imagefolder(Path(tmp), dtype)
        files[file].write_bytes(_damage(files[file].read_bytes(), how, where, value))
        _check_dataset(tmp)


@FEW
@given(target=st.sampled_from(["images", "labels", "gz-images"]), **DAMAGE)
def test_damaged_mnist_idx_files(target: str, how: str, where: float, value: int) -> None:
    def idx(array: np.ndarray) -> bytes:
        return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, labels = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), (np.arange(6) % 10).astype(np.uint8)
        files = {"images": root / "t10k-images-idx3-ubyte", "labels": root / "t10k-labels-idx1-ubyte",
                 "gz-images": root / "train-images-idx3-ubyte.gz"}
        files["images"].write_bytes(idx(images))
        files["labels"].write_bytes(idx(labels))
        files["gz-images"].write_bytes(gzip.compress(idx(images)))
        (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels)))
        files[target].write_bytes(_damage(files[target].read_bytes(), how, where, value))
        _check_dataset(f"mnist-idx:{root}")


@FEW
@given(suffix=st.sampled_from(["npz", "h5"]), **DAMAGE)
def test_damaged_paired_array_files(suffix: str, how: str, where: float, value: int) -> None:
    rng = np.random.default_rng(2)
    pairs = PairedDataset("p", rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8), rng.integers(0, 256, (8, 6, 6, 1), dtype=np.uint8),
                          np.arange(8) % 2, ["a", "b"])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_paired(pairs, Path(tmp) / f"pairs.{suffix}", "D")
        path.write_bytes(_damage(path.read_bytes(), how, where, value))
        _check_dataset(str(path))


@settings(max_examples=25 * SCALE, deadline=None)
@given(key=st.sampled_from(["rgb", "ir", "label", "split", "class_names"]),
       change=st.sampled_from(["drop", "nan", "float-range", "negative", "2d", "strings", "short"]))
def test_paired_arrays_with_wrong_contents(key: str, change: str) -> None:
    """Well-formed files holding wrong data: missing arrays, NaN or out-of-range pixels, bad labels or shapes."""
    rng = np.random.default_rng(3)
    arrays = {"rgb": rng.random((8, 6, 6, 3)).astype(np.float32), "ir": rng.random((8, 6, 6, 1)).astype(np.float32),
              "label": np.arange(8) % 2, "split": np.array([0, 0, 0, 2] * 2, np.uint8), "class_names": np.array(["a", "b"])}
    value = arrays[key]
    if value.dtype.kind == "U" and change in ("nan", "float-range", "negative"):
        change = "short"  # numeric damage does not apply to names
    if change == "drop":
        del arrays[key]
    elif change == "nan" and value.dtype.kind == "f":
        value.flat[5] = np.nan
    elif change == "float-range":
        arrays[key] = value.astype(np.float32) * 3 - 1
    elif change == "negative":
        arrays[key] = -np.abs(value.astype(np.int64)) - 1 if value.dtype.kind in "iuf" else value
    elif change == "2d":
        arrays[key] = value.reshape(len(value), -1)[:, :1] if value.ndim > 1 else np.stack([value, value], 1)
    elif change == "strings":
        arrays[key] = value.astype(str)
    elif change == "short":
        arrays[key] = value[:-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.npz"
        np.savez(path, **arrays)
        _check_dataset(str(path))


# --------------------------------------------------------------------------------------------------- reports


def _good_report(path: Path) -> None:
    report = Report(path)
    with report.start_run("a", kind="attack", config={"eps": 0.1}) as run:
        idx = np.arange(6)
        run.append({"index": idx, "label": idx % 3, "pred": idx % 3, "success": idx % 2 == 0, "queries": idx + 1,
                    "l2": idx * 0.5, "adv_images": np.zeros((6, 1, 2, 2), np.float32)})
        run.add_table("history", {"epoch": np.arange(3), "loss": np.ones(3)})
        run.finish({"robust_accuracy": 0.5})
    with report.start_run("b", kind="attack", config={"eps": 0.2}) as run:
        run.append({"index": np.arange(2), "label": np.zeros(2, np.int64), "success": np.zeros(2, bool)})


REPORT_OBJECTS = ["/runs/a/samples/index", "/runs/a/samples/label", "/runs/a/samples/success", "/runs/a/samples/adv_images",
                  "/runs/a/samples", "/runs/a/summary", "/runs/a/tables/history/epoch", "/runs/a/tables", "/runs/a", "/runs"]
REPORT_ATTRS = ["/:format", "/:schema_version", "/runs/a:kind", "/runs/a:status", "/runs/a:config", "/runs/a:seed",
                "/runs/b:status", "/runs/b:config"]
REPLACEMENTS = ["delete", "string", "float", "2-D", "scalar", "short", "unsorted", "group"]


@settings(max_examples=50 * SCALE, deadline=None)
@given(target=st.sampled_from(REPORT_OBJECTS + REPORT_ATTRS), how=st.sampled_from(REPLACEMENTS))
def test_reports_with_missing_or_wrong_typed_contents(target: str, how: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.h5"
        _good_report(path)
        with h5py.File(path, "r+") as f:
            if ":" in target:
                owner, attr = target.split(":")
                attrs = f[owner].attrs
                if how == "delete":
                    del attrs[attr]
                else:
                    attrs[attr] = {"string": "nonsense", "float": 1.5, "2-D": np.zeros((2, 2)), "scalar": 7,
                                   "short": "", "unsorted": "{\"x\": [}", "group": b"\xff\xfe"}[how]
            else:
                old = f[target]
                data = old[()] if isinstance(old, h5py.Dataset) else np.arange(3)
                del f[target]
                if how == "delete":
                    pass
                elif how == "group":
                    f.create_group(target)
                elif how == "string":
                    f.create_dataset(target, data=np.array([b"x"] * max(len(np.atleast_1d(data)), 1)))
                elif how == "float":
                    f.create_dataset(target, data=np.asarray(data, np.float64) + 0.5)
                elif how == "2-D":
                    f.create_dataset(target, data=np.zeros((3, 2)))
                elif how == "scalar":
                    f.create_dataset(target, data=3)
                elif how == "short":
                    f.create_dataset(target, data=np.asarray(data)[:1])
                else:
                    f.create_dataset(target, data=np.asarray(data)[::-1])
        _read_everything(path)


def _read_everything(path: Path) -> None:
    """Every read of a damaged report is a one-line ReportError or returns consistent data."""
    report = Report(path)
    try:
        runs = report.runs()
    except AdvkitError as exc:
        _one_line(exc)
        return
    for info in runs:
        try:
            data = report.read(info.id, images=True)
        except AdvkitError as exc:
            _one_line(exc)
            continue
        index = data.samples["index"]
        assert index.dtype.kind in "iu" and index.ndim == 1 and np.all(np.diff(index) > 0)
        assert all(len(v) == len(index) for v in data.samples.values())
        for name, kind in (("label", "iu"), ("success", "b"), ("queries", "iu")):
            if name in data.samples:
                assert data.samples[name].dtype.kind in kind, f"{name} read back as {data.samples[name].dtype}"
    _use_everything(report)
    try:  # a writer refuses a damaged file in one line, or works on an intact one
        with report.start_run("c", kind="attack", config={}) as run:
            run.append({"index": np.arange(2)})
            run.finish()
    except AdvkitError as exc:
        _one_line(exc)


def _use_everything(report: Report) -> None:
    """What `advkit report plot|export|compare` do with the damaged report: a one-line AdvkitError or a result."""
    from advkit.report.compare import compare_runs
    from advkit.report.export import export_csv, summary_json
    from advkit.report.plots import plot_report

    with tempfile.TemporaryDirectory() as out:
        for use in (lambda: plot_report(report, Path(out) / "figs"), lambda: export_csv(report, Path(out) / "csv"),
                    lambda: summary_json(report), lambda: compare_runs([str(report.path)])):
            try:
                use()
            except AdvkitError as exc:
                _one_line(exc)


def test_huge_batches_are_refused_or_handled_without_hanging(digits_model: ModelWrapper) -> None:
    """A batch far larger than anything the model was made for still gives per-sample results (no size limits hit)."""
    x = torch.rand(4096, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4096) % 10
    result = create_attack("fgsm", eps=0.05)(digits_model, x, y)
    assert result.success.shape == (4096,) and int(result.queries.max()) == 1
    with pytest.raises(AdvkitError, match="8x8"):
        digits_model.logits(torch.rand(1, 1, 4096, 4096))


# ---------------------------------------------------------------------------------------------- config files


def _option_names(command: str) -> list[str]:
    import typer.main

    from advkit.cli import app

    return sorted(p.name for p in typer.main.get_command(app).commands[command].params if p.name)  # type: ignore[attr-defined]


TOML_VALUES = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=6), st.booleans(),
                        st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.sampled_from("ab"), st.integers(0, 3), max_size=2))


@settings(max_examples=30 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["attack", "train"]), known=st.booleans(), data=st.data(), value=TOML_VALUES,
       garbage=st.sampled_from(["", "", "x = = 1\n", "[table\n", "\x00\xff", "a = 1\na = 2\n"]))
def test_config_files_with_unknown_keys_or_wrong_values(cli, tmp_path: Path, command: str, known: bool, data: st.DataObject,
                                                      value: object, garbage: str) -> None:
    """Unknown keys, malformed TOML, and known keys with wrong-typed values: exit 2 (bad usage) or 1 (one line).

    ``--device nope`` makes any config that parses end in a one-line error before work starts.
    """
    import json

    names = _option_names(command)
    key = data.draw(st.sampled_from(names) if known else st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10))
    (tmp_path / "c.toml").write_text(f"{json.dumps(key, ensure_ascii=False)} = {_toml(value)}\n{garbage}", encoding="utf-8", errors="surrogateescape")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli(command, "--config", "c.toml", "--device", "nope", *(["--out", "x.safetensors"] if command == "train" else []))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code in (1, 2), (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    normalised = key.replace("-", "_")
    if normalised not in names and garbage not in ("x = = 1\n", "[table\n", "\x00\xff", "a = 1\na = 2\n"):
        assert result.code == 2 and "unknown key" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was written


def _toml(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {v}" for k, v in value.items()) + " }"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("target, how", [("/runs/a/samples/index", "delete"), ("/runs/a:status", "float"),
                                         ("/runs/a:config", "unsorted"), ("/runs/a/samples/index", "unsorted"),
                                         ("/runs/a/samples/success", "string"), ("/:schema_version", "string")])
def test_cli_on_a_damaged_report_is_one_line(cli, digits_checkpoint: Path, tmp_path: Path, target: str, how: str) -> None:
    """Reading the damaged run is exit 1 with one ``error:`` line; listing the file and attacking into it either
    work (other runs are intact) or fail the same way, and never make the damaged run readable."""
    path = tmp_path / "r.h5"
    _good_report(path)
    with h5py.File(path, "r+") as f:
        if ":" in target:
            owner, attr = target.split(":")
            f[owner].attrs[attr] = {"float": 1.5, "unsorted": "{\"x\": [}", "string": "nonsense"}[how]
        else:
            data = f[target][()]
            del f[target]
            if how == "unsorted":
                f.create_dataset(target, data=data[::-1])
            elif how == "string":
                f.create_dataset(target, data=np.array([b"x"] * len(data)))

    def one_line_or_ok(*args: object, must_fail: bool = False) -> int:
        result = cli(*args)
        assert "Traceback" not in result.stderr, result.stderr
        if result.code or must_fail:  # status lines (logs) may come first; the error is one line, the last
            errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
            assert result.code == 1 and len(errors) == 1, (args, result.stderr)
            assert result.stderr.strip().splitlines()[-1] == errors[0], (args, result.stderr)
        return result.code

    one_line_or_ok("report", "show", "r.h5", "a", must_fail=True)
    one_line_or_ok("report", "show", "r.h5")
    for command in (["plot", "r.h5", "--run", "a"], ["export", "r.h5", "--run", "a"], ["export", "r.h5", "--format", "json"],
                    ["compare", "r.h5:a,b"]):
        one_line_or_ok("report", *command, must_fail=True)  # every command that reads the damaged run refuses it
    if one_line_or_ok("attack", "fgsm", "--data", "digits", "--model", digits_checkpoint, "--n", "2", "--out", "r.h5") == 0:
        assert Report(path).read("attack-fgsm").n_samples == 2
        one_line_or_ok("report", "show", "r.h5", "a", must_fail=True)


@pytest.mark.parametrize("spec", ["digits", "synthetic-rgbir", "pairs.npz"])
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_cli_refuses_a_data_param_seed_out_of_range_in_one_line(cli, tmp_path: Path, spec: str, seed: str) -> None:
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "pairs.npz", rgb=rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8),
             ir=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), label=np.arange(8) % 2)
    result = cli("data", "info", spec, "--data-param", f"seed={seed}")
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: {spec} (--data-param): seed must be in 0..{2**63 - 1}, got {seed}"


@pytest.mark.parametrize("split", [False, True])
def test_cli_refuses_negative_labels_of_a_paired_file_in_one_line(cli, tmp_path: Path, split: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {"rgb": (rng.random((40, 16, 16, 3)) * 255).astype(np.uint8), "ir": (rng.random((40, 16, 16)) * 255).astype(np.uint8),
              "label": np.r_[-1, rng.integers(0, 3, 39)]}
    np.savez(tmp_path / "pe_neg.npz", **arrays, **({"split": np.arange(40) % 3} if split else {}))
    result = cli("data", "info", "pe_neg.npz")
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == "error: paired-d:pe_neg.npz: labels must be >= 0, got -1"
