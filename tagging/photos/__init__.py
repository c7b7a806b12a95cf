"""Real photos: decoding (a security boundary), segmentation, the decoding pool, labelled
photo folders (a model's evaluation on them is above: tagging.model.evaluate)."""
