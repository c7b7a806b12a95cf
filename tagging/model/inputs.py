"""What a model version takes as input: the 28x28 pixels, or a frozen encoder's features.

`pixels` is the baseline (the seed's 784 values / 255, from the photo rendered the way
Fashion-MNIST was made; what Fashion-MNIST's own test is measured on). An encoder input is
a pretrained image encoder's pooled embedding of the whole photo (tagging.encoder). Each
version records its input (`metadata.input`), and is refused against any other encoder than
the one it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagging.encoder import ENCODERS, EncoderSpec, encoder_spec
from tagging.errors import ConfigError, ModelError
from tagging.photos.render import PIXELS, PhotoInput
from tagging.photos.segment import SIZE

PIXELS_NAME = "pixels"
PIXELS_PREPROCESSING = ("the photo segmented and rendered like Fashion-MNIST (tagging.photos."
                        "segment): 28x28 grey, bright on black; values / 255")


@dataclass(frozen=True)
class ModelInput:
    """`pixels`, or the name of an encoder (tagging.encoder.ENCODERS)."""

    name: str

    def __post_init__(self) -> None:
        if self.name != PIXELS_NAME and self.name not in ENCODERS:
            raise ConfigError(f"unknown model input {self.name!r}: {PIXELS_NAME!r} or an "
                              f"encoder ({', '.join(ENCODERS)})")

    @property
    def is_pixels(self) -> bool:
        return self.name == PIXELS_NAME

    @property
    def encoder(self) -> EncoderSpec | None:
        return None if self.is_pixels else encoder_spec(self.name)

    @property
    def photo_input(self) -> PhotoInput:
        """What the decoding workers make of a photo for this input."""
        return PIXELS if self.encoder is None else PhotoInput("encoder",
                                                             self.encoder.input_size)

    @property
    def shape(self) -> tuple[int, ...]:
        """The classifier's input: an image (28, 28) or a feature vector (d,)."""
        return (SIZE, SIZE) if self.encoder is None else (self.encoder.feature_dim,)

    def prepare(self, inputs: np.ndarray) -> np.ndarray:
        """The classifier's float32 input: pixels / 255, or the features as they are."""
        if self.is_pixels:
            return inputs.astype(np.float32) * np.float32(1 / 255)
        return inputs.astype(np.float32, copy=False)

    @property
    def key(self) -> str:
        """Names this input's values in caches and in the label store (the weights' hash:
        features of other weights are other values)."""
        spec = self.encoder
        return PIXELS_NAME if spec is None else f"{spec.name}:{spec.weights_sha256[:16]}"

    def describe(self) -> dict:
        """What a version records (`metadata.input`)."""
        if self.encoder is None:
            return {"kind": PIXELS_NAME, "input_size": SIZE,
                    "preprocessing": PIXELS_PREPROCESSING}
        return {"kind": "encoder", **self.encoder.describe()}

    @classmethod
    def of_version(cls, version: str, metadata: dict) -> ModelInput:
        """The input a version was trained on, refused if this installation's differs."""
        recorded = metadata.get("input")
        if not recorded:  # a version from before encoders
            return cls(PIXELS_NAME)
        name = PIXELS_NAME if recorded.get("kind") == PIXELS_NAME else recorded.get("encoder")
        if name != PIXELS_NAME and name not in ENCODERS:
            raise ModelError(f"model {version} was trained on encoder {name!r}, which this "
                             f"installation does not have ({', '.join(ENCODERS)})")
        found = cls(name)
        if found.describe() != {k: recorded.get(k) for k in found.describe()}:
            raise ModelError(f"model {version} was trained on another {name} than this "
                             f"installation's: recorded {recorded}, installed "
                             f"{found.describe()}; retrain it (or install what it was "
                             "trained with)")
        return found
