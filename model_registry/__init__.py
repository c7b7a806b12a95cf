"""Model registry on a local folder or S3: immutable versions, a gated champion alias moved by
compare-and-swap, an event log of one object per event."""

from model_registry.errors import CorruptMetadataError, RegistryError, VersionNotFound
from model_registry.gate import GateDecision, GatePolicy
from model_registry.registry import Registry, VersionInfo

__all__ = [
    "CorruptMetadataError",
    "GateDecision",
    "GatePolicy",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "VersionNotFound",
]
