"""The classifier: data, augmentation, training, inference, calibration, review policy, reports."""
