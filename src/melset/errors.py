"""Errors a user sees as one sentence (no traceback): bad metadata, an unusable store."""


class MetadataError(Exception):
    """Metadata that cannot be used; str() names the file and what is wrong in one sentence."""


class StoreError(Exception):
    """A store that cannot be used as asked; str() says why and what to do."""


class MissingDependency(Exception):
    """An optional part of melset needs a package that is not installed; str() says which."""
