"""Real photos: decoding (a security boundary), segmentation, the decoding pool, labelled
photo folders and their evaluation."""
