"""The ten Fashion-MNIST categories, in label order (category_id 0-9)."""

CATEGORY_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CATEGORY_SLUGS: tuple[str, ...] = (
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
CATEGORY_SHORT: tuple[str, ...] = (  # for plots with little room
    "tee", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "boot",
)
NUM_CLASSES = len(CATEGORY_SLUGS)
