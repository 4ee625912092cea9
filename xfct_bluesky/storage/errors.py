"""The storage layer's errors, below every module that raises them."""

__all__ = ["DataFolderError"]


class DataFolderError(ValueError):
    """The data folder (or a file in it) cannot be used as it is; the message names the file and the fix.

    Raised by the storage functions for a folder that is not a directory,
    is read-only where writing is needed, holds a corrupt catalog, does not
    match its catalog, or lacks an asset file a run points to. The CLI
    prints it in one line.
    """
