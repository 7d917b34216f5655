"""Adversarial-example detectors: layer-wise autoencoders (Wojcik et al., https://arxiv.org/abs/2006.10013) and baselines.

See ``docs/detectors.md`` for the user guide and ``docs/methods.md`` for differences from the paper's code.
"""

from advkit.detectors.detector import DetectorSettings, Features, LayerwiseDetector
from advkit.detectors.taps import default_layers, layer_shapes

__all__ = ["DetectorSettings", "Features", "LayerwiseDetector", "default_layers", "layer_shapes"]
