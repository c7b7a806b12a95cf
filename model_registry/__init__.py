"""File-based model registry: immutable versions, a gated champion alias, an event log."""

from model_registry.gate import GateDecision, GatePolicy
from model_registry.registry import (
    CorruptMetadataError,
    Registry,
    RegistryError,
    VersionInfo,
    VersionNotFound,
)

__all__ = [
    "CorruptMetadataError",
    "GateDecision",
    "GatePolicy",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "VersionNotFound",
]
