"""The errors a user sees as one sentence, never a traceback.

Every error melset raises on purpose is a `MelsetError`; its str() names the thing that is
wrong and says what to do. The command line prints it and exits with status 2.
"""


class MelsetError(Exception):
    """Base of every error melset raises for a user to read."""


class MetadataError(MelsetError):
    """Metadata that cannot be used (tracks.csv, a manifest, a folder); names the file and the problem."""


class StoreError(MelsetError):
    """A store that cannot be used as asked; says why and what to do."""


class MissingDependency(MelsetError):
    """An optional part of melset needs a package that is not installed; says which to install."""


class UsageError(MelsetError):
    """An option value or a combination of options that cannot work; names the option."""


class RunError(MelsetError):
    """A training run folder that cannot be used as asked (missing, damaged, made for other data)."""


class RecipeError(UsageError, ValueError):
    """A recipe that cannot give sound spectrograms (a value out of range, a bad recipe file); names the parameter."""
