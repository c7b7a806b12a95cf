"""Catalogue tagging: Fashion-MNIST categories for product photos.

catalogue/ the data plane (a day's partition: plan, tag, publish, read, validate); photos/
decoding and segmenting photos; model/ the classifier; loop/ the label store and live
quality; pipeline/ the DAG's steps; ops/ Airflow locally and the native stack; cli/ the
`tagging` command.
"""

from tagging.memory import bound_address_space

bound_address_space()
