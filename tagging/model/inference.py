"""NumPy forward pass of the registered dense classifier: no TensorFlow on the tagging path.

The trainer exports the Keras model's Dense weights to `weights.npz` and checks that this
forward pass gives Keras's predictions before the version is registered. Its input is the
version's (tagging.model.inputs): 28x28 pixels, or an encoder's features (computed by the
caller, tagging.encoder). A pixels version may also average each image's logits with
those of its mirror image (`mirror_average`): real products face either way, and two views
of an unfamiliar photo err less than one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagging.errors import ModelError
from tagging.model.inputs import PIXELS_NAME, ModelInput

WEIGHTS_FILE = "weights.npz"


@dataclass
class Classifier:
    """Dense ReLU layers, then a softmax over temperature-scaled logits."""

    kernels: list[np.ndarray]
    biases: list[np.ndarray]
    temperature: float = 1.0
    mirror_average: bool = False  # average the logits of each image and its mirror image
    review_policy: dict = field(default_factory=dict)
    version: str = ""
    model_input: ModelInput = field(default_factory=lambda: ModelInput(PIXELS_NAME))

    def __post_init__(self) -> None:
        """Refuse what would predict NaN or garbage: a temperature of 0, say, divides every
        logit by zero, and the softmax then gives every row the same class, confidence NaN."""
        name = f"model {self.version}" if self.version else "model"
        if not (isinstance(self.temperature, numbers.Real) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ModelError(f"{name}: calibration temperature must be a finite number > 0, "
                             f"got {self.temperature!r}")
        if len(self.kernels) != len(self.biases) or not self.kernels:
            raise ModelError(f"{name}: {len(self.kernels)} kernels for {len(self.biases)} "
                             "biases")
        if not all(np.isfinite(a).all() for a in [*self.kernels, *self.biases]):
            raise ModelError(f"{name}: weights contain NaN or infinite values")
        width = int(np.prod(self.model_input.shape))
        if self.kernels[0].shape[0] != width:
            raise ModelError(f"{name}: its first layer takes {self.kernels[0].shape[0]} values,"
                             f" its input {self.model_input.name} gives {width}")
        if self.mirror_average and not self.model_input.is_pixels:
            raise ModelError(f"{name}: mirror averaging is for pixels, not features")

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Pre-softmax outputs for the version's input: uint8 images (n, 28, 28) or
        features (n, d)."""
        x = self.model_input.prepare(inputs).reshape(len(inputs), -1)
        last = len(self.kernels) - 1
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            x = x @ kernel + bias
            if i < last:
                np.maximum(x, 0, out=x)
        return x

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, float32 (n, 10), for the version's input."""
        z = self.logits(inputs)
        if self.mirror_average:
            z += self.logits(inputs[:, :, ::-1])
            z *= np.float32(0.5)
        z /= np.float32(self.temperature)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def save(self, path: Path) -> None:
        arrays = {f"kernel_{i}": k for i, k in enumerate(self.kernels)}
        arrays |= {f"bias_{i}": b for i, b in enumerate(self.biases)}
        np.savez(path, **arrays)

    @classmethod
    def from_keras(cls, model, calibration: dict | None = None,
                   model_input: ModelInput | None = None) -> Classifier:
        """Take the Dense layers' weights of a Keras model (Flatten + Dense stack).

        calibration: a version's {"temperature": t, "mirror_average": b} (default: neither).
        """
        dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
        kernels, biases = zip(*(layer.get_weights() for layer in dense), strict=True)
        return cls([k.astype(np.float32) for k in kernels],
                   [b.astype(np.float32) for b in biases], **calibration_fields(calibration),
                   model_input=model_input or ModelInput(PIXELS_NAME))

    @property
    def calibration(self) -> dict:
        """What a version stores besides its weights, to predict as this classifier does."""
        return {"temperature": self.temperature, "mirror_average": self.mirror_average}

    @classmethod
    def from_registry(cls, registry_root: Path | str, ref: str = "champion") -> Classifier:
        """Load a registered version's weights, calibration and review policy."""
        from tagging.model.registry import open_registry

        info = open_registry(registry_root).get(ref)
        with np.load(info.path / WEIGHTS_FILE) as npz:
            n = len([k for k in npz.files if k.startswith("kernel_")])
            kernels = [npz[f"kernel_{i}"] for i in range(n)]
            biases = [npz[f"bias_{i}"] for i in range(n)]
        meta = info.metadata
        return cls(kernels, biases, **calibration_fields(meta.get("calibration")),
                   review_policy=dict(meta.get("review", {})), version=info.version,
                   model_input=ModelInput.of_version(info.version, meta))


def calibration_fields(calibration: dict | None) -> dict:
    """Classifier fields from a version's stored calibration (default: none)."""
    calibration = calibration or {}
    return {"temperature": calibration.get("temperature", 1.0),  # checked by the Classifier
            "mirror_average": bool(calibration.get("mirror_average", False))}


@dataclass
class PhotoModel:
    """A version with what its input needs: the classifier, and for features its encoder
    (tagging.encoder, loaded once). Takes photos as the decoding workers render them."""

    classifier: Classifier
    encoder: object | None = None  # tagging.encoder.Encoder

    @classmethod
    def of(cls, classifier: Classifier) -> PhotoModel:
        if classifier.model_input.is_pixels:
            return cls(classifier)
        from tagging.encoder import Encoder

        return cls(classifier, Encoder.load(classifier.model_input.name))

    @property
    def form(self):
        """What the decoding workers must make of a photo (tagging.photos.render)."""
        return self.classifier.model_input.photo_input

    def inputs(self, rendered: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
        """The classifier's input for rendered photos (features: only of the `ok` rows)."""
        if self.encoder is None:
            return rendered
        return self.encoder.features_of(rendered, np.ones(len(rendered), bool) if ok is None
                                        else ok)

    def predict_proba(self, rendered: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
        return self.classifier.predict_proba(self.inputs(rendered, ok))
