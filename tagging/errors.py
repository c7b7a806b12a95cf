"""The project's errors. Everything it raises on purpose derives from TaggingError (or, in
the standalone registry, from model_registry.RegistryError); the CLI reports both as one
line, and anything else is a bug that deserves its traceback."""

from model_registry.errors import RegistryError


class TaggingError(Exception):
    """Base of the tagging package's errors: the message says what and where."""


class ConfigError(TaggingError, ValueError):
    """A setting (environment variable or option) has a value that cannot be used."""


class DataError(TaggingError, ValueError):
    """A Fashion-MNIST file or a labelled photo folder is missing, truncated or malformed."""


class ImageError(TaggingError, ValueError):
    """A photo cannot be turned into a 28x28 image; the message becomes the row's tag_error."""


class ModelError(TaggingError, ValueError):
    """A registered version cannot predict: its weights or calibration are unusable."""


class PartitionNotFound(TaggingError, FileNotFoundError):
    """The partition has no input Parquet files."""


class PartitionInvalid(TaggingError, ValueError):
    """A partition breaks the input or output contract, or a quality limit."""


class StorageError(TaggingError, OSError):
    """Object storage or a catalogue root could not be used (unreachable, denied, missing)."""


class ObjectExists(StorageError):
    """A create-only write found the object already there: another writer won."""


class AirflowRunError(TaggingError, RuntimeError):
    """An Airflow command or run failed; the message names its log file."""


class StackError(AirflowRunError):
    """The native stack (tagging.ops.stack) cannot start, or one of its services failed."""


EXPECTED_ERRORS = (TaggingError, RegistryError, OSError)
"""What the CLI reports as one `error:` line (OSError: paths the user gave)."""
