"""What a network expects of its input, carried inside every advkit checkpoint.

Attacks work in [0, 1] pixel space; the model wrapper turns pixels into what the net was trained on.

    >>> p = Preprocessing(channels=1, input_size=(28, 28), mean=(0.1307,), std=(0.3081,), class_names=tuple("0123456789"))
    >>> Preprocessing.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from advkit.errors import CheckpointError


@dataclass(frozen=True)
class Preprocessing:
    """Input contract of a network.

    Attributes:
        channels: input channels the net takes (1 or 3 usually); None if unknown.
        input_size: (H, W) the net takes; None if unknown (any size).
        mean, std: per-channel normalisation applied to [0, 1] pixels, one value or one per channel.
        class_names: names of the output classes, in logit order; empty if unknown.
        domain: "rgb", "ir" or "gray": what the net was trained on.
    """

    channels: int | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    class_names: tuple[str, ...] = field(default_factory=tuple)
    domain: str = "rgb"

    def __post_init__(self) -> None:
        # one value or one per channel, as documented: 0.5 and (0.5,) alike; an input_size of 8 is 8x8
        for name in ("mean", "std"):
            value = getattr(self, name)
            values = (value,) if isinstance(value, numbers.Real) else value
            try:
                object.__setattr__(self, name, tuple(float(v) for v in values))
            except (TypeError, ValueError):
                raise CheckpointError(f"preprocessing {name} must be one number or one per channel, got {value!r}") from None
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise CheckpointError(f"preprocessing {name} must be finite, got {value!r}")
        size = self.input_size
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            size = (size, size)
        if size is not None:
            if (isinstance(size, (str, bytes)) or len(size) != 2
                    or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size)):
                raise CheckpointError(f"preprocessing input_size must be (height, width) ints >= 1 or one int, got {size!r}")
            object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        if self.channels is not None and (isinstance(self.channels, bool) or not isinstance(self.channels, numbers.Integral)
                                          or self.channels < 1):
            raise CheckpointError(f"preprocessing channels must be an int >= 1, got {self.channels!r}")
        if len(self.mean) != len(self.std):
            raise CheckpointError(f"preprocessing mean {self.mean} and std {self.std} differ in length")
        if any(s <= 0 for s in self.std):
            raise CheckpointError(f"preprocessing std must be positive, got {self.std}")
        if self.channels is not None and len(self.mean) not in (1, self.channels):
            raise CheckpointError(f"preprocessing has {len(self.mean)} mean values for {self.channels} channels")

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Rebuild from ``to_dict`` output (e.g. parsed from checkpoint metadata); unknown keys are an error."""
        if not isinstance(data, dict):
            raise CheckpointError(f"preprocessing metadata must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise CheckpointError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}")
        try:
            size = data.get("input_size")
            return cls(
                channels=None if data.get("channels") is None else int(data["channels"]),
                input_size=None if size is None else (int(size[0]), int(size[1])),
                mean=tuple(float(v) for v in data.get("mean", (0.0,))),
                std=tuple(float(v) for v in data.get("std", (1.0,))),
                class_names=tuple(str(c) for c in data.get("class_names", ())),
                domain=str(data.get("domain", "rgb")),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"malformed preprocessing {data!r}: {exc}") from None
