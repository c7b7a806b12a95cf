"""Catalogue tagging: Fashion-MNIST categories for product photos.

Layers, lowest first; a package imports only the layers below it (tests/test_layers.py):
ground     settings, errors, storage/, labels, memory, schema (the output contract)
photos/    decoding and segmenting photos, labelled photo folders
encoder/   frozen pretrained encoders (beside photos/: neither imports the other)
model/     the classifier: inputs, training, calibration, review policy, inference,
           evaluation on labelled photos
catalogue/ the data plane: a day's partition planned, tagged, published, validated, read;
           the review answers file and live quality it applies and records
loop/      the label store, the holdout comparison, what a version trained on and expects
review/    the review queue and its web app (beside loop/: neither imports the other)
pipeline/  the DAG's steps
ops/       Airflow locally, the native stack, alerts; then cli/ (the `tagging` command)
           and dags/ (the DAG file). model_registry/ stands alone, beneath them all.
"""

from tagging.memory import bound_address_space

bound_address_space()
