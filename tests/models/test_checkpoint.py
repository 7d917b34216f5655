"""Checkpoint formats, safe loading, and one-line errors for bad files."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import h5py
import pytest
import torch

from advkit.errors import CheckpointError
from advkit.models import Preprocessing, create_architecture, load_checkpoint, save_checkpoint

KW = {"num_classes": 10, "in_channels": 1, "input_size": 8}
PRE = Preprocessing(1, (8, 8), (0.3,), (0.4,), tuple("0123456789"), "gray")


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_architecture("small-cnn", **KW).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_advkit_checkpoints_round_trip(net: torch.nn.Module, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    save_checkpoint(path, net, "small-cnn", KW, PRE, {"dataset": "digits"})
    loaded = load_checkpoint(path)
    assert (loaded.kind, loaded.architecture, loaded.preprocessing, loaded.extra) == ("advkit", "small-cnn", PRE, {"dataset": "digits"})
    assert _same(net, loaded.net)
    # settings given on top of the recorded ones are what the net is built with, and what the result reports
    wider = load_checkpoint(path, arch_kwargs={"input_size": 9})
    assert wider.arch_kwargs == {**KW, "input_size": 9} and _same(net, wider.net)  # 9 px: the same weight shapes as 8


def test_bare_state_dicts_need_an_architecture(net: torch.nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    st, pt = tmp_path / "bare.safetensors", tmp_path / "bare.pt"
    save_file(net.state_dict(), str(st))
    torch.save({"model_state_dict": net.state_dict()}, pt)
    for path in (st, pt):
        with pytest.raises(CheckpointError, match="--arch"):
            load_checkpoint(path)
        loaded = load_checkpoint(path, architecture="small-cnn", arch_kwargs=KW)
        assert loaded.kind == "state_dict" and _same(net, loaded.net)


def test_torchscript(net: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(path), _extra_files={"advkit.json": '{"preprocessing": {"channels": 1, "input_size": [8, 8]}}'})
    loaded = load_checkpoint(path)
    assert loaded.kind == "torchscript" and loaded.preprocessing.input_size == (8, 8)
    assert _same(net, loaded.net)


def test_torchscript_metadata_written_flat_is_refused_with_its_layout(net: torch.nn.Module, tmp_path: Path) -> None:
    """Preprocessing.to_dict() written as advkit.json itself (the obvious guess) was ignored: the model was then
    refused as carrying no preprocessing metadata, while it had exactly that extra file."""
    import json

    from advkit.models import Preprocessing

    path = tmp_path / "flat.pt"
    flat = json.dumps(Preprocessing(channels=1, input_size=(8, 8)).to_dict())
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(path), _extra_files={"advkit.json": flat})
    with pytest.raises(CheckpointError, match=r'unknown key\(s\) channels, .* \(preprocessing fields go under "preprocessing"\); '
                                              r'its layout is \{"preprocessing": \{"channels"'):
        load_checkpoint(path)
    nested = tmp_path / "nested.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(nested),
                   _extra_files={"advkit.json": json.dumps({"preprocessing": json.loads(flat)})})
    assert load_checkpoint(nested).preprocessing.input_size == (8, 8)


def test_factory_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_models.py").write_text(textwrap.dedent("""
        import torch
        def build():
            net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
            net.advkit_preprocessing = {"channels": 1, "input_size": [8, 8], "class_names": ["a", "b", "c"]}
            return net
        def not_a_model():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_checkpoint("user_models:build")
    assert loaded.kind == "factory" and loaded.preprocessing.class_names == ("a", "b", "c")
    with pytest.raises(CheckpointError, match="not a torch.nn.Module"):
        load_checkpoint("user_models:not_a_model")
    with pytest.raises(CheckpointError, match="has no callable"):
        load_checkpoint("user_models:missing")


class _Exploit:
    """Unpickling this writes a marker file: the proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="--unsafe-pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unsafe_pickle_loads_whole_modules_with_a_warning(net: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(net, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="runs any code"):
        loaded = load_checkpoint(path, unsafe_pickle=True)
    assert loaded.kind == "pickle" and _same(net, loaded.net)


def test_bad_files_give_one_line_errors(net: torch.nn.Module, tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, net, "small-cnn", KW, PRE)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    text, junk = tmp_path / "notes.txt", tmp_path / "junk.pt"
    text.write_text("hello\n")  # the legacy-format parser fails with a KeyError on it
    junk.write_bytes(b"junk")  # ... and with a struct.error on this
    report, image = tmp_path / "report.pt", tmp_path / "figure.safetensors"  # files passed as checkpoints by mistake
    with h5py.File(report, "w") as f:
        f.create_group("runs")
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    damaged = tmp_path / "damaged.pt"  # a torch.save archive cut short: a damaged checkpoint, not another format
    torch.save(net.state_dict(), damaged)
    damaged.write_bytes(damaged.read_bytes()[:300])
    cases = {  # a file that is no checkpoint says what it is; it was "not a readable PyTorch checkpoint (corrupt pickle data)"
        tmp_path / "missing.pt": "no such checkpoint",
        truncated: "not a readable safetensors",
        garbage: "garbage.pt is a file of no known format, not a model checkpoint",
        text: "notes.txt is a text file, not a model checkpoint",
        junk: "junk.pt is a text file, not a model checkpoint",
        report: "report.pt is an HDF5 file \\(advkit reports are HDF5: read them with advkit report show\\), not a model checkpoint",
        image: "figure.safetensors is a PNG image, not a model checkpoint",
        damaged: "damaged.pt is not a readable PyTorch checkpoint",
        tmp_path: "is a folder",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)


def test_architecture_mismatch_names_the_problem(net: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, net, "small-cnn", KW, PRE)
    with pytest.raises(CheckpointError, match="do not match architecture resnet20: missing"):
        load_checkpoint(path, architecture="resnet20", arch_kwargs={"num_classes": 10, "in_channels": 1})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(path, arch_kwargs={"num_classes": 5})


def test_failing_pickle_payload_with_unsafe_flag_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    with open(path, "wb") as f:
        pickle.dump(_Raiser(), f)
    with pytest.raises(CheckpointError, match="plain pickle stream"):
        load_checkpoint(path)
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="unpickling .* failed"):
        load_checkpoint(path, unsafe_pickle=True)


class _Raiser:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (int, ("not a number",))




def test_a_checkpoint_that_would_not_load_back_is_not_written(net: torch.nn.Module, tmp_path: Path) -> None:
    """The wrapper saved instead of its net, arch_kwargs without input_size, or another architecture's name were
    written without a word and failed only when loaded."""
    from advkit.models import ModelWrapper, Preprocessing

    pre = Preprocessing(channels=1, input_size=(8, 8))
    for args, message in [((ModelWrapper(net, pre), "small-cnn", KW), "unexpected mean, std, net.block1"),
                          ((net, "small-cnn", {k: v for k, v in KW.items() if k != "input_size"}), "shape mismatch"),
                          ((net, "resnet20", {}), "do not match architecture resnet20")]:
        path = tmp_path / "m.safetensors"
        with pytest.raises(CheckpointError, match=f"not writing {path}: it would not load back .*{message}"):
            save_checkpoint(path, *args, pre)
        assert not path.exists()
    save_checkpoint(tmp_path / "ok.pt", net, "small-cnn", KW, pre)
    assert _same(net, load_checkpoint(tmp_path / "ok.pt").net)
