"""Shared fixtures: natural-looking test batches cut from scikit-learn's two bundled photographs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

NaturalBatch = Callable[[int, int, int, int], torch.Tensor]


@pytest.fixture(scope="session")
def natural() -> NaturalBatch:
    """``natural(b, c, h, w)``: b different (h, w) crops of real photos in [0, 1]; c = 1 gives luma, c = 3 RGB.

    Crops alternate between china.jpg and flower.jpg and are box-resized, so they look like CIFAR images: smooth
    regions, edges and texture, no pure noise.
    """
    photos = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]

    def make(b: int, c: int, h: int, w: int) -> torch.Tensor:
        images = []
        for k in range(b):
            photo = photos[k % 2]
            top, left = 40 * k, 60 * k
            crop = Image.fromarray(photo[top : top + 320, left : left + 320]).resize((w, h), Image.BOX)
            if c == 1:
                crop = crop.convert("L")
            array = np.asarray(crop, dtype=np.float32).reshape(h, w, -1) / 255
            images.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
        return torch.stack(images)

    return make
