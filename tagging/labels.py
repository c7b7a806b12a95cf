"""The ten Fashion-MNIST categories, in label order (category_id 0-9)."""

CATEGORY_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CATEGORY_SLUGS: tuple[str, ...] = (
    "t-shirt-top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
SLUG_TO_ID: dict[str, int] = {slug: i for i, slug in enumerate(CATEGORY_SLUGS)}
NUM_CLASSES = len(CATEGORY_SLUGS)
