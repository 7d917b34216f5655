"""Checkpoints and detector files are data, not code: whatever a downloaded file holds, loading it runs nothing
unless the user passes ``--unsafe-pickle`` (docs: advkit/models/checkpoint.py, docs/reliability.md).

Every payload here writes a marker file when unpickled; the tests check it is refused in one line and the marker
never appears, and (so the payload is known to be live) that it does appear under ``--unsafe-pickle``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advkit.errors import AdvkitError, CheckpointError
from advkit.models import load_checkpoint


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _torch_save(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": [_Exploit(marker)]}, path)


def _plain_pickle(protocol: int) -> object:
    def write(path: Path, marker: Path) -> None:
        path.write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}, protocol=protocol))
    return write


def _torchscript_with_evil_pickle(member: str) -> object:
    """A real TorchScript archive whose ``member`` pickle is swapped for the exploit (the code/ folder stays)."""
    def write(path: Path, marker: Path) -> None:
        net = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
        good = path.with_name("good.pt")
        torch.jit.save(net, str(good))
        with zipfile.ZipFile(good) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        target = next(name for name in members if name.endswith(member))
        members[target] = pickle.dumps(_Exploit(marker), protocol=2)
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return write


PAYLOADS = {
    "torch.save .pt": ("evil.pt", _torch_save),
    "torch.save .pth": ("evil.pth", _torch_save),
    "torch.save, any suffix": ("evil.ckpt", _torch_save),
    "torch.save named .safetensors": ("evil.safetensors", _torch_save),
    "plain pickle protocol 0": ("evil.pkl", _plain_pickle(0)),
    "plain pickle protocol 2": ("evil.pt", _plain_pickle(2)),
    "plain pickle protocol 5": ("evil.bin", _plain_pickle(5)),
    "TorchScript data.pkl": ("evil-ts.pt", _torchscript_with_evil_pickle("data.pkl")),
    "TorchScript constants.pkl": ("evil-ts.pt", _torchscript_with_evil_pickle("constants.pkl")),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the protocol-5 payload
@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_malicious_files_are_refused_and_run_nothing(case: str, tmp_path: Path) -> None:
    name, write = PAYLOADS[case]
    marker = tmp_path / "pwned"
    path = tmp_path / name
    write(path, marker)  # type: ignore[operator]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, architecture="small-cnn")
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists(), f"{case}: loading ran code from the file"


def test_the_payload_is_live_under_unsafe_pickle(tmp_path: Path) -> None:
    """What the default refusal prevents: with the explicit opt-in, the same file's code does run."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    _torch_save(path, marker)
    with pytest.warns(UserWarning, match="runs any code"), pytest.raises(CheckpointError):
        load_checkpoint(path, unsafe_pickle=True)  # then fails: a dict of junk, not a model
    assert marker.exists()


def test_cli_refuses_a_malicious_checkpoint_in_one_line(cli, tmp_path: Path) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    _torch_save(path, marker)
    for args in (["attack", "fgsm", "--model", path, "--data", "digits", "--n", "2"], ["models", "info", path]):
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.code == 1 and len(lines) == 1 and "--unsafe-pickle" in lines[0], result.stderr
    assert not marker.exists() and not (tmp_path / "advkit-report.h5").exists()


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", json.dumps({"preprocessing": 5}),
                                  json.dumps({"preprocessing": {"channels": "three"}})])
def test_torchscript_metadata_that_is_not_an_object_is_one_line(meta: str, tmp_path: Path) -> None:
    path = tmp_path / "ts.pt"
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    torch.jit.save(net, str(path), _extra_files={"advkit.json": meta})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_factory_specs_run_only_the_named_code_and_fail_in_one_line(factories: Path) -> None:
    """``module:factory`` is the user's explicit request to run their code (the documented policy); its failures
    are one-line errors, and a spec that names an existing file loads the file, never a module."""
    (factories / "broken_models.py").write_text("def build():\n    raise RuntimeError('no GPU here\\nsecond line')\n")
    with pytest.raises(CheckpointError, match=r"broken_models:build raised RuntimeError: no GPU here$"):
        load_checkpoint("broken_models:build")
    with pytest.raises(CheckpointError, match="cannot import"):
        load_checkpoint("no_such_module_anywhere:build")
    shadow = factories / "os:system"  # a file whose name looks like a spec is read as a checkpoint file
    shadow.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="is a file of no known format, not a model checkpoint"):
        load_checkpoint(shadow)


def _detector_api() -> tuple[object, type[Exception]]:
    from advkit.detectors.detector import LayerwiseDetector
    from advkit.errors import DetectorError

    return LayerwiseDetector, DetectorError


@pytest.mark.parametrize("name", ["det.safetensors", "det.pt", "det.pkl"])
def test_detector_files_that_are_pickles_are_refused_and_run_nothing(name: str, digits_model, tmp_path: Path) -> None:
    detector, error = _detector_api()
    marker, path = tmp_path / "pwned", tmp_path / name
    _torch_save(path, marker)
    for read in (lambda: detector.read_meta(path), lambda: detector.load(path, digits_model)):  # type: ignore[attr-defined]
        with pytest.raises(error) as info:
            read()
        assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("meta", ["[1, 2]", "\"text\"", "{not json"])
def test_detector_files_with_malformed_metadata_are_one_line(meta: str, tmp_path: Path) -> None:
    detector, error = _detector_api()
    path = tmp_path / "det.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"advkit.detector": meta, "advkit_detector": meta})
    with pytest.raises(error) as info:
        detector.read_meta(path)  # type: ignore[attr-defined]
    assert isinstance(info.value, AdvkitError) and "\n" not in str(info.value)
