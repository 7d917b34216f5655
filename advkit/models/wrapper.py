"""The model wrapper: the only thing attacks call.

It takes images in [0, 1] pixel space, adapts channels (1 -> 3 by replication), normalises, runs the net in
eval mode, selects the logits from tuple/dict outputs, and counts queries per sample against a budget.

    >>> import torch
    >>> from advkit.models.preprocessing import Preprocessing
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    >>> model = ModelWrapper(net, Preprocessing(channels=3, input_size=(4, 4), mean=(0.5,), std=(0.5,)))
    >>> counter = QueryCounter(2, budget=10)
    >>> with model.counting(counter):
    ...     logits = model(torch.rand(2, 1, 4, 4))  # gray images are replicated to 3 channels
    >>> tuple(logits.shape), counter.counts.tolist()
    ((2, 5), [1, 1])
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from advkit.errors import AdvkitError, QueryBudgetExceeded
from advkit.models.preprocessing import Preprocessing


@contextmanager
def deployed(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` as deployed inside the block, then exactly as before: every module in eval mode (dropout off,
    BatchNorm statistics unchanged) and no parameter taking gradients, so attacks, which differentiate the input
    only, leave no ``.grad`` on the weights for a training loop's next step to add in.

        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout()).train()
        >>> with deployed(net):
        ...     net.training, net[0].weight.requires_grad
        (False, False)
        >>> net.training, net[0].weight.requires_grad
        (True, True)
    """
    modes = [(m, m.training) for m in net.modules()]  # per module: a net may keep some parts in eval on purpose
    trainable = [p for p in net.parameters() if p.requires_grad]
    net.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for m, training in modes:
            m.training = training
        for p in trainable:
            p.requires_grad_(True)


def padded_batch(n: int) -> int:
    """The batch size to run a pass of ``n`` inputs at: ``n`` up to 16, else the next multiple of an eighth of the
    power of two below it (at most 12.5% more rows). oneDNN builds its kernels per input shape, 0.6-0.9 ms for each
    new batch size of the digits CNN against 0.35 ms for a whole pass once built, and Pixle's passes take almost
    every size as images leave the batch; padded, they take a few dozen sizes.

        >>> [padded_batch(n) for n in (1, 16, 17, 33, 100, 1000)]
        [1, 16, 18, 36, 104, 1024]
    """
    if n <= 16:
        return n
    step = (1 << (n.bit_length() - 1)) // 8
    return -(-n // step) * step


class QueryCounter:
    """Per-sample counts of model evaluations for one attacked batch, with an optional per-sample budget.

    Every input row a forward pass evaluates is one query for the sample it belongs to: an attack that
    scores 8 candidates of sample 3 in one pass spends 8 queries of sample 3. Without a budget, charges are
    summed when :attr:`counts` is read, so a forward pass costs no tensor operation for its accounting (on a
    tiny net that bookkeeping is a measurable share of an attack's time); the rows handed to :meth:`charge`
    must not be changed in place before then (checked).

        >>> counter = QueryCounter(3)
        >>> counter.charge(torch.tensor([0, 2, 2]))
        >>> counter.charge(torch.tensor([2]))
        >>> counter.counts.tolist()
        [1, 0, 3]
    """

    _MAX_PENDING = 256  # charges kept before they are summed

    def __init__(self, n: int, budget: int | None = None, device: str | torch.device = "cpu") -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1):
            raise ValueError(f"query budget must be an int >= 1, got {budget!r}")
        budget = None if budget is None else int(budget)  # NumPy's integers too
        self._counts = torch.zeros(n, dtype=torch.long, device=device)
        self._pending: list[tuple[torch.Tensor, int]] = []  # (rows, rows._version) not summed yet
        self.budget = budget

    def __len__(self) -> int:
        """Samples in the counted batch."""
        return len(self._counts)

    @property
    def device(self) -> torch.device:
        return self._counts.device

    @property
    def counts(self) -> torch.Tensor:
        """(n,) int64 queries charged to each sample so far (the tensor itself: in-place edits are kept)."""
        if self._pending:
            if any(rows._version != version for rows, version in self._pending):
                raise RuntimeError("rows charged to a QueryCounter were modified in place before they were counted")
            rows = torch.cat([r for r, _ in self._pending])
            self._pending.clear()
            self._counts.index_add_(0, rows, torch.ones_like(rows))
        return self._counts

    def charge(self, rows: torch.Tensor) -> None:
        """Count one query for each entry of ``rows`` (sample positions in this batch; repeats allowed)."""
        if rows.device != self._counts.device or rows.dtype != torch.long:
            rows = rows.to(self._counts.device, torch.long)
        if self.budget is None:
            self._pending.append((rows, rows._version))
            if len(self._pending) >= self._MAX_PENDING:
                self.counts  # noqa: B018  (sums the pending charges)
            return
        counts = self.counts.index_add(0, rows, torch.ones_like(rows))
        if int(counts.max()) > self.budget:  # one sync, only under a budget
            over = int(torch.argmax(counts))
            raise QueryBudgetExceeded(f"sample {over} of the batch would exceed its budget of {self.budget} queries")
        self._counts = counts

    def affordable(self, k: int = 1) -> torch.Tensor:
        """(n,) bool: which samples can still pay for k more queries (all of them without a budget)."""
        if self.budget is None:
            return torch.ones_like(self._counts, dtype=torch.bool)
        return self.counts + k <= self.budget

    def remaining(self) -> torch.Tensor:
        """(n,) queries each sample may still spend (a large number without a budget)."""
        if self.budget is None:
            return torch.full_like(self._counts, torch.iinfo(torch.long).max)
        return self.budget - self.counts


class ModelWrapper(nn.Module):
    """A classifier in [0, 1] pixel space with query accounting.

    Args:
        net: any module; its output may be a tensor, a tuple/list (first item), a dict (``"logits"`` or the
            only value) or an object with ``.logits``.
        preprocessing: the net's input contract (channels, size, mean/std, class names).

    Shapes: ``forward(x)`` takes (B, C, H, W) float in [0, 1] and returns (B, K) logits.
    """

    def __init__(self, net: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.net = net.eval()
        self.preprocessing = preprocessing
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1))
        self._counter: QueryCounter | None = None

    @property
    def device(self) -> torch.device:
        for tensor in self.net.parameters():
            return tensor.device
        return self.mean.device

    def unwrapped(self) -> ModelWrapper:
        """The same model without a DistributedDataParallel shell (attacks inside training must not sync gradients)."""
        inner = getattr(self.net, "module", None)
        if isinstance(self.net, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module):
            modes = [(m, m.training) for m in inner.modules()]
            plain = ModelWrapper(inner, self.preprocessing).to(self.mean.device)
            for m, training in modes:  # wrapping switches a net to eval; this one is training (its BatchNorm, dropout)
                m.training = training
            return plain
        return self

    @property
    def counter(self) -> QueryCounter | None:
        """The counter charged by forward passes right now, if any."""
        return self._counter

    def train(self, mode: bool = True) -> ModelWrapper:
        """The wrapped net always stays in eval mode: attacks must see the deployed model."""
        super().train(mode)
        self.net.eval()
        return self

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The net :func:`deployed` inside the block: one switched to train mode after wrapping (a training loop)
        is attacked as deployed, its BatchNorm statistics stay as they were and its weights get no gradients."""
        with deployed(self.net):
            yield

    @contextmanager
    def counting(self, counter: QueryCounter) -> Iterator[QueryCounter]:
        """Charge every forward pass inside the block to ``counter``."""
        previous, self._counter = self._counter, counter
        try:
            yield counter
        finally:
            self._counter = previous

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None, *, padding: int = 0) -> torch.Tensor:
        """Logits (B - padding, K) for pixels x (B, C, H, W) in [0, 1].

        ``rows`` (B - padding,) maps each input to its sample in the active counter; it may be omitted when the
        input batch is exactly the counted batch. The last ``padding`` inputs only fill the batch up to a size the
        net has already run (:func:`padded_batch`): they are neither counted nor returned.
        """
        n = x.shape[0] - padding
        if self._counter is not None:
            self._counter.charge(self._rows(x[:n], rows))
        logits = self.logits(x)
        return logits[:n] if padding else logits

    def probabilities(self, x: torch.Tensor, rows: torch.Tensor | None = None, *, padding: int = 0) -> torch.Tensor:
        """Softmax probabilities (B - padding, K): all a black-box attack may see."""
        return torch.softmax(self.forward(x, rows, padding=padding), dim=1)

    def fingerprint(self) -> str:
        """SHA-256 (64 hex digits) of the net's class, every weight and buffer (name, dtype, shape, bytes) and the
        preprocessing: two models share it only if they compute the same function on the same inputs."""
        h = hashlib.sha256()
        h.update(type(self.net).__name__.encode())
        pre = self.preprocessing
        h.update(json.dumps([pre.channels, list(pre.input_size) if pre.input_size else None, list(pre.mean),
                             list(pre.std)]).encode())
        for name, tensor in sorted(self.net.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Uncounted forward pass; for the attack base's independent re-check of success only."""
        x, dtype = self.normalise(self.adapt(x)), self._dtype()
        logits = select_logits(self.net(x if x.dtype == dtype else x.to(dtype)))
        named = self.preprocessing.num_classes
        if named is not None and logits.shape[1] != named:  # labels would index past the scores, or miss classes
            raise AdvkitError(f"the net outputs {logits.shape[1]} class scores but its preprocessing names {named} classes")
        return logits

    def _dtype(self) -> torch.dtype:
        """The net's floating dtype: float16/float64 pixels are cast to it instead of failing inside the net. Read at
        every pass (the first floating parameter: about 4 us), so ``net.double()`` after wrapping is followed."""
        return next((t.dtype for t in self.net.parameters() if t.is_floating_point()), self.mean.dtype)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Check the shape against the contract and replicate 1-channel images for 3-channel nets."""
        if x.dim() != 4:
            raise AdvkitError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():  # integer pixels would silently be read as values up to 255
            raise AdvkitError(f"the model takes float images in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
        pre = self.preprocessing
        if pre.input_size is not None and tuple(x.shape[2:]) != tuple(pre.input_size):
            h, w = pre.input_size
            raise AdvkitError(f"the model takes {h}x{w} images, got {x.shape[2]}x{x.shape[3]}")
        if pre.channels is not None and x.shape[1] != pre.channels:
            if x.shape[1] == 1:
                return x.expand(-1, pre.channels, -1, -1)
            raise AdvkitError(f"the model takes {pre.channels}-channel images, got {x.shape[1]} channels")
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def _rows(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        counter = self._counter
        if counter is None:  # unreachable: forward only calls this while counting
            raise RuntimeError('no active query counter')
        if rows is not None:
            if rows.shape != (x.shape[0],):
                raise ValueError(f"rows must have shape ({x.shape[0]},), got {tuple(rows.shape)}")
            return rows
        if len(counter) == 1:  # one sample: every input belongs to it
            return torch.zeros(x.shape[0], dtype=torch.long, device=counter.device)
        if x.shape[0] != len(counter):
            raise UnattributedQuery(
                f"a forward pass of {x.shape[0]} images inside a counted batch of {len(counter)} "
                "needs rows= to attribute its queries"
            )
        return torch.arange(x.shape[0], device=counter.device)


class UnattributedQuery(RuntimeError):
    """A forward pass whose inputs cannot be matched to counted samples (an attack-side bug or a third-party
    attack evaluating subsets; the torchattacks adapter then attacks one sample at a time)."""


def select_logits(output: Any) -> torch.Tensor:
    """Pick the (B, K) logits from what a net returns."""
    if isinstance(output, torch.Tensor):
        logits = output
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    elif isinstance(output, Mapping):
        tensors = {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}
        if "logits" in tensors:
            logits = tensors["logits"]
        elif len(tensors) == 1:
            logits = next(iter(tensors.values()))
        else:
            raise AdvkitError(f"the model returned a dict without 'logits' ({', '.join(map(str, output))})")
    elif isinstance(getattr(output, "logits", None), torch.Tensor):
        logits = output.logits
    else:
        raise AdvkitError(f"cannot find logits in a model output of type {type(output).__name__}")
    if logits.dim() != 2:
        raise AdvkitError(f"the model's logits must be (B, K), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise AdvkitError(f"the model's logits must be floating point, got {logits.dtype}")
    return logits
