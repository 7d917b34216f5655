"""Saving and safely loading classifiers.

Accepted checkpoints (``advkit models info`` tells what a file is):
  - ``.safetensors`` written by advkit (architecture + preprocessing in the metadata), or any safetensors
    state_dict plus ``architecture=`` (CLI ``--arch``);
  - ``.pt`` / ``.pth``: advkit's ``{"advkit": {...}, "state_dict": {...}}`` or a plain state_dict, read with
    ``torch.load(weights_only=True)``; files holding pickled Python objects are refused unless
    ``unsafe_pickle=True`` (``--unsafe-pickle``), because unpickling runs code from the file;
  - TorchScript archives (``torch.jit.save``): TorchScript code, not pickled Python;
  - ``package.module:factory``: a Python callable of the user's own that returns an ``nn.Module``
    (the user asked for that code to run by naming it).

    >>> import tempfile, pathlib
    >>> from advkit.models.architectures import create_architecture
    >>> net = create_architecture("small-cnn", num_classes=10, in_channels=1, input_size=8)
    >>> pre = Preprocessing(channels=1, input_size=(8, 8), class_names=tuple("0123456789"))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
    >>> save_checkpoint(path, net, "small-cnn", {"num_classes": 10, "in_channels": 1, "input_size": 8}, pre)
    >>> loaded = load_checkpoint(path)
    >>> loaded.architecture, loaded.preprocessing.input_size
    ('small-cnn', (8, 8))
"""

from __future__ import annotations

import importlib
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkit.errors import AdvkitError, CheckpointError, SettingsError
from advkit.models.architectures import create_architecture
from advkit.models.preprocessing import Preprocessing
from advkit.runtime import write_atomically

FORMAT_VERSION = 1
_FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class LoadedModel:
    """A network with everything needed to use it in pixel space.

    ``kind`` is one of "advkit", "state_dict", "torchscript", "factory", "pickle".
    """

    net: nn.Module
    preprocessing: Preprocessing
    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    kind: str = "advkit"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: Path,
    net: nn.Module,
    architecture: str,
    arch_kwargs: dict[str, Any],
    preprocessing: Preprocessing,
    extra: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write weights + architecture + preprocessing; ``.safetensors`` or ``.pt`` by suffix, atomically.

    Refused (CheckpointError) when the file would not load back: ``architecture`` built with ``arch_kwargs`` must
    take ``net``'s weights (a ModelWrapper given for its net, or a missing input_size, failed only at load time).
    With ``overwrite=False`` an existing file, also one another process wrote meanwhile, stays: FileExistsError.
    """
    path = Path(path)
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"checkpoint {path} must end in .safetensors, .pt or .pth")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    try:
        _build(architecture, dict(arch_kwargs), state, "the net")
    except AdvkitError as exc:
        raise CheckpointError(f"not writing {path}: it would not load back ({exc})") from None
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "arch_kwargs": arch_kwargs,
        "preprocessing": preprocessing.to_dict(),
        "extra": extra or {},
    }
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata={"advkit": json.dumps(meta)}),
                         replace=overwrite)
    else:
        write_atomically(path, lambda tmp: torch.save({"advkit": meta, "state_dict": state}, tmp), replace=overwrite)


def load_checkpoint(
    spec: str | Path,
    *,
    architecture: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    preprocessing: Preprocessing | None = None,
    unsafe_pickle: bool = False,
    map_location: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a checkpoint file or a ``module:factory`` spec into a :class:`LoadedModel` (eval mode).

    ``architecture``/``arch_kwargs`` are needed for bare state_dicts; ``preprocessing`` overrides what the
    file carries. Every failure is a one-line :class:`CheckpointError`.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if not path.exists() and _FACTORY_SPEC.match(text):
        loaded = _load_factory(text)
    elif not path.exists():
        raise CheckpointError(f"no such checkpoint: {text}")
    elif path.is_dir():
        raise CheckpointError(f"{text} is a folder, not a checkpoint file")
    elif (what := _known_other_format(_head(path))) is not None:
        raise CheckpointError(not_a_checkpoint(text, what))
    elif path.suffix == ".safetensors":
        loaded = _load_safetensors(path, architecture, arch_kwargs)
    elif _is_torchscript(path):
        loaded = _load_torchscript(path, map_location)
    else:
        loaded = _load_torch(path, architecture, arch_kwargs, unsafe_pickle)
    if preprocessing is not None:
        loaded = replace(loaded, preprocessing=preprocessing)
    loaded.net.to(map_location).eval()
    return loaded


def _build(architecture: str | None, arch_kwargs: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> nn.Module:
    if architecture is None:
        raise CheckpointError(f"{source} holds bare weights (no architecture, no preprocessing): advkit attack, detect and "
                              "models info take --arch NAME for them (see advkit list models); the other commands need a "
                              "checkpoint with advkit metadata (advkit.models.save_checkpoint writes one)")
    try:
        net = create_architecture(architecture, **arch_kwargs)
    except SettingsError:  # already one line naming the architecture and the setting
        raise
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {architecture} with {arch_kwargs}: {exc}") from None
    _load_state(net, state, architecture, source)
    return net


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], architecture: str, source: str) -> None:
    """Strict load with a one-line explanation of the first mismatches."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:  # most often another input size or class count than the architecture's defaults
        problems.append(f"shape mismatch {_few(shapes)} (advkit attack and models info take settings such as input_size "
                        "as --arch-param)")
    if problems:
        raise CheckpointError(f"weights in {source} do not match architecture {architecture}: {'; '.join(problems)}")
    net.load_state_dict(state)


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _advkit_model(meta: dict[str, Any], state: dict[str, torch.Tensor], architecture: str | None,
                  arch_kwargs: dict[str, Any] | None, source: str) -> LoadedModel:
    """A checkpoint with advkit metadata; ``architecture``/``arch_kwargs`` override what it records, and the
    result reports the settings the net was really built with."""
    arch, kwargs, pre, extra = _from_meta(meta, source)
    arch, kwargs = architecture or arch, {**kwargs, **(arch_kwargs or {})}
    return LoadedModel(_build(arch, kwargs, state, source), pre, arch, kwargs, "advkit", source, extra)


def _from_meta(meta: dict[str, Any], source: str) -> tuple[str, dict[str, Any], Preprocessing, dict[str, Any]]:
    try:
        return (
            str(meta["architecture"]),
            dict(meta.get("arch_kwargs", {})),
            Preprocessing.from_dict(meta.get("preprocessing", {})),
            dict(meta.get("extra", {})),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source} has malformed advkit metadata ({exc})") from None


def _load_safetensors(path: Path, architecture: str | None, arch_kwargs: dict[str, Any] | None) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None
    if "advkit" in metadata:
        try:
            meta = json.loads(metadata["advkit"])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path} has unreadable advkit metadata ({exc})") from None
        return _advkit_model(meta, state, architecture, arch_kwargs, str(path))
    if "advkit_detector" in metadata:  # the key LayerwiseDetector.save writes (models cannot import detectors)
        raise CheckpointError(f"{path} is an advkit detector (written by advkit detect fit), not a model checkpoint; "
                              "pass it as --detector to advkit detect eval or score")
    net = _build(architecture, arch_kwargs or {}, state, str(path))
    return LoadedModel(net, Preprocessing(), str(architecture), arch_kwargs or {}, "state_dict", str(path))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; torch.save archives hold only ``data.pkl`` + tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


TORCHSCRIPT_METADATA = ('{"preprocessing": {"channels": C, "input_size": [H, W], "mean": [...], "std": [...], '
                        '"class_names": [...], "domain": "rgb"|"ir"|"gray"}, "architecture": NAME}')
"""The layout of a TorchScript archive's ``advkit.json`` extra file (``preprocessing`` is ``Preprocessing.to_dict()``)."""


def _load_torchscript(path: Path, map_location: str | torch.device) -> LoadedModel:
    files = {"advkit.json": ""}
    try:
        net = torch.jit.load(str(path), map_location=map_location, _extra_files=files)
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a loadable TorchScript archive ({_first_line(exc)})") from None
    pre, arch = Preprocessing(), "torchscript"
    if files["advkit.json"]:
        try:
            meta = json.loads(files["advkit.json"])
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise CheckpointError(f"{path} has unreadable advkit.json metadata ({_first_line(exc)})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path} has advkit.json metadata that is a {type(meta).__name__}, not a JSON object")
        unknown = sorted(set(meta) - {"preprocessing", "architecture"})
        if unknown:  # e.g. Preprocessing.to_dict() written flat: it would be ignored, and the model called undescribed
            flat = set(unknown) & {f.name for f in fields(Preprocessing)}
            hint = " (preprocessing fields go under \"preprocessing\")" if flat else ""
            raise CheckpointError(f"{path} has advkit.json metadata with unknown key(s) {', '.join(unknown)}{hint}; "
                                  f"its layout is {TORCHSCRIPT_METADATA}")
        pre = Preprocessing.from_dict(meta.get("preprocessing", {}))
        arch = str(meta.get("architecture", arch))
    return LoadedModel(net, pre, arch, {}, "torchscript", str(path))


def _load_torch(path: Path, architecture: str | None, arch_kwargs: dict[str, Any] | None, unsafe_pickle: bool) -> LoadedModel:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _blocked_global(exc, path)
        if blocked is None:
            raise _unreadable(path, "corrupt pickle data") from None
        if not unsafe_pickle:
            raise CheckpointError(
                f"{path} holds pickled Python objects ({blocked}); loading it would run code from the "
                "file. Pass --unsafe-pickle only if you trust its source"
            ) from None
        warnings.warn(f"unpickling {path} with --unsafe-pickle: this runs any code the file contains", stacklevel=2)
        obj = _unsafe_load(path)
    except Exception as exc:  # weights_only runs no code, so whatever the parser raises (KeyError, struct.error...) is the file's
        raise _unreadable(path, _first_line(exc)) from None
    if isinstance(obj, nn.Module):
        return LoadedModel(obj, Preprocessing(), type(obj).__name__, {}, "pickle", str(path))
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict or an advkit checkpoint")
    if "advkit" in obj and "state_dict" in obj:
        return _advkit_model(obj["advkit"], _tensors(obj["state_dict"], path), architecture, arch_kwargs, str(path))
    for key in ("state_dict", "model_state_dict", "model"):  # common training-script layouts
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    net = _build(architecture, arch_kwargs or {}, _tensors(obj, path), str(path))
    return LoadedModel(net, Preprocessing(), str(architecture), arch_kwargs or {}, "state_dict", str(path))


def _unsafe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary code ran; whatever it raised is the file's fault
        raise CheckpointError(f"unpickling {path} failed ({type(exc).__name__}: {_first_line(exc)})") from None


def _tensors(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} state_dict has non-tensor entries: {_few([str(b) for b in bad])}")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefixes


CHECKPOINT_FORMATS = "safetensors, torch.save (.pt/.pth) or TorchScript"
# first bytes of files people pass as --model by mistake (a report, an image, an array), and what they are
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (advkit reports are HDF5: read them with advkit report show)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x93NUMPY", "a NumPy array (.npy)"),
)


def not_a_checkpoint(spec: str, what: str) -> str:
    return f"{spec} is {what}, not a model checkpoint ({CHECKPOINT_FORMATS})"


def _head(path: Path, size: int = 512) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""  # the loader that reads it next says why


def _known_other_format(head: bytes) -> str | None:
    """What a file that is surely no checkpoint is, from its first bytes (its signature); None otherwise."""
    return next((what for magic, what in _SIGNATURES if head.startswith(magic)), None)


def _unreadable(path: Path, reason: str) -> CheckpointError:
    """torch.load's failure, told as what the file is when it is no torch.save file at all: text, or bytes that
    are neither a zip archive nor a pickle (torch.save writes one of them); else as a damaged checkpoint."""
    head = _head(path)
    if head and b"\x00" not in head and _is_utf8(head):
        return CheckpointError(not_a_checkpoint(str(path), "a text file"))
    if head and not head.startswith((b"PK", b"\x80")):
        return CheckpointError(not_a_checkpoint(str(path), "a file of no known format"))
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason})")


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


def _blocked_global(exc: Exception, path: Path) -> str | None:
    """What torch's weights-only unpickler refused, or None when the file is not valid pickle data at all."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"global {found.group(1)}"
    try:  # a plain pickle (not a torch archive) uses opcodes the weights-only unpickler rejects: parse, never run
        with open(path, "rb") as handle:
            for _ in pickletools.genops(handle):
                pass
    except Exception:
        return None
    return "a plain pickle stream"


def _load_factory(spec: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"cannot import {module_name} for {spec}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CheckpointError(f"{spec}: {module_name} has no callable {attr}")
    try:
        net = factory()
    except Exception as exc:  # the user's own code failed: say where, in one line
        raise CheckpointError(f"{spec} raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"{spec} returned a {type(net).__name__}, not a torch.nn.Module")
    pre = getattr(net, "advkit_preprocessing", None)
    pre = Preprocessing.from_dict(pre) if isinstance(pre, dict) else pre if isinstance(pre, Preprocessing) else Preprocessing()
    return LoadedModel(net, pre, spec, {}, "factory", spec)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
