"""The training recipe: everything that decides a version's weights, stored with it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tagging.encoder import DEFAULT_ENCODER
from tagging.errors import ConfigError
from tagging.model.inputs import ModelInput
from tagging.settings import LoopPolicy

# What pays differs by input (benchmarks/README.md, "The encoder's recipe"): 784 pixels learn
# Fashion-MNIST best from all of it with light dropout; an encoder's 1280 features of a few
# hundred real photos overfit and calibrate worse without strong dropout, and more
# Fashion-MNIST than 12,000 images drowns the real photos (and costs minutes of encoding).
INPUT_DEFAULTS = {"pixels": {"dropout": 0.2},
                  "encoder": {"dropout": 0.5, "train_subset": 12_000}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (stored as the version's hyper-parameters)."""

    # The classifier's input (tagging.model.inputs): "pixels" or an encoder's name.
    model_input: str = DEFAULT_ENCODER
    hidden_units: tuple[int, ...] = (256, 128)
    # After each hidden layer; None: the input's own (INPUT_DEFAULTS).
    dropout: float | None = None
    epochs: int = 15  # the learning rate follows a cosine decay over these; early stopping
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int = 4
    seed: int = 0
    # The first N Fashion-MNIST training images (None: the input's own; pixels: all 60,000)
    train_subset: int | None = None
    # Toward real photos (tagging.model.augment / calibration / review):
    photo_variants: float = 0.5  # pixels: photo-like variants added, a fraction of the fit set
    real_photos: str | None = None  # labelled real photos (dir with manifest.csv + images/)
    label_store: str | None = None  # the shop's verified labels (tagging.loop.labelstore root)
    real_photo_repeats: int = 60  # copies of each train-side photo in the fit set; 0: none
    review_target_precision: float = LoopPolicy.target_precision  # of tags published unreviewed
    mirror_average: bool = True  # pixels: predict from each image and its mirror image
    # The photo stage (tagging.model.fitting): the base fine-tuned on the train-side photos
    photo_epochs: int = 5
    photo_learning_rate: float = 1e-3  # cosine-decayed over photo_epochs
    replay: int | None = None  # Fashion-MNIST images replayed in the photo stage (None: all)
    cross_fit_folds: int = 4  # out-of-fold evidence for the review policy; 0: holdout only

    def __post_init__(self) -> None:
        kind = "pixels" if ModelInput(self.model_input).is_pixels else "encoder"
        for name, value in INPUT_DEFAULTS[kind].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: resolved once, here

    @property
    def input(self) -> ModelInput:
        return ModelInput(self.model_input)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown training options: {sorted(unknown)}")
        values = dict(values)
        if "hidden_units" in values:
            values["hidden_units"] = tuple(int(u) for u in values["hidden_units"])
        return cls(**values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hidden_units": list(self.hidden_units)}
