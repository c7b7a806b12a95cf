"""File-based model registry: immutable versions, a gated champion alias, an event log."""

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
