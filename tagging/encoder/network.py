"""EfficientNet-Lite in Keras, built from the tensors of a converted checkpoint.

The architecture is read off the tensors (kernel sizes, expansions, channels, number of
blocks); only the strides are fixed by the family: a stage starts where a block's channels
change, and the seven stages downsample 1, 2, 2, 2, 1, 2, 1. The checkpoint came from
TensorFlow, so TF's own conventions hold: 'same' padding (asymmetric at stride 2),
batch-norm epsilon 1e-3, ReLU6, inputs scaled (x - 127) / 128.
"""

from __future__ import annotations

import numpy as np

from tagging.errors import ModelError

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPSILON = 1e-3
MEAN, STD = 127.0, 128.0


def build_encoder(tensors: dict[str, np.ndarray], input_size: int, *, imagenet: bool = False):
    """A Keras model: uint8 RGB (n, s, s, 3) -> pooled features (n, d) [, ImageNet logits]."""
    import keras
    from keras import layers

    def batch_norm(x, name: str):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON)
        y = layer(x)
        layer.set_weights([tensors[f"{name}.{k}"] for k in
                           ("weight", "bias", "running_mean", "running_var")])
        return y

    def conv(x, name: str, stride: int = 1):
        kernel = tensors[f"{name}.weight"]  # (out, in, h, w)
        layer = layers.Conv2D(kernel.shape[0], kernel.shape[2:], strides=stride,
                              padding="same", use_bias=False)
        y = layer(x)
        layer.set_weights([kernel.transpose(2, 3, 1, 0)])
        return y

    def depthwise(x, name: str, stride: int):
        kernel = tensors[f"{name}.weight"]  # (channels, 1, h, w)
        layer = layers.DepthwiseConv2D(kernel.shape[2:], strides=stride, padding="same",
                                       use_bias=False)
        y = layer(x)
        layer.set_weights([kernel.transpose(2, 3, 0, 1)])
        return y

    def relu6(x):
        return layers.ReLU(6.0)(x)

    try:
        inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="rgb")
        x = layers.Rescaling(1 / STD, offset=-MEAN / STD)(inputs)
        x = relu6(batch_norm(conv(x, "_conv_stem", 2), "_bn0"))
        stage = -1
        for i in range(block_count(tensors)):
            block = f"_blocks.{i}"
            expands = f"{block}._expand_conv.weight" in tensors
            channels_in = (tensors[f"{block}._expand_conv.weight"].shape[1] if expands
                           else tensors[f"{block}._depthwise_conv.weight"].shape[0])
            channels_out = tensors[f"{block}._project_conv.weight"].shape[0]
            first = i == 0 or channels_in != channels_out
            stage += first
            y = relu6(batch_norm(conv(x, f"{block}._expand_conv"), f"{block}._bn0")) \
                if expands else x
            y = relu6(batch_norm(depthwise(y, f"{block}._depthwise_conv",
                                           STAGE_STRIDES[stage] if first else 1),
                                 f"{block}._bn1"))
            y = batch_norm(conv(y, f"{block}._project_conv"), f"{block}._bn2")
            x = y if first else layers.Add()([x, y])
        x = relu6(batch_norm(conv(x, "_conv_head"), "_bn1"))
        features = layers.GlobalAveragePooling2D(name="features")(x)
        outputs = [features]
        if imagenet:
            head = layers.Dense(tensors["_fc.weight"].shape[0], name="imagenet")
            outputs.append(head(features))
            head.set_weights([tensors["_fc.weight"].T, tensors["_fc.bias"]])
    except (KeyError, IndexError, ValueError) as e:
        raise ModelError(f"the checkpoint is not an EfficientNet-Lite: {e}") from None
    return keras.Model(inputs, outputs if imagenet else features, name="efficientnet_lite")


def block_count(tensors: dict[str, np.ndarray]) -> int:
    indices = {int(name.split(".")[1]) for name in tensors if name.startswith("_blocks.")}
    if indices != set(range(len(indices))) or len(indices) > len(STAGE_STRIDES) * 10:
        raise ModelError("the checkpoint's blocks are not numbered 0..n-1")
    return len(indices)
