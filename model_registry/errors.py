"""The registry's errors: every one it raises on purpose derives from RegistryError."""


class RegistryError(Exception):
    """A registry operation cannot be done (the message says why and where)."""


class CorruptMetadataError(RegistryError):
    """A registry file is unreadable, malformed or does not match its artifacts."""


class VersionNotFound(RegistryError, LookupError):
    """No version (or no champion) by that name."""
