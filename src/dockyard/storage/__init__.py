"""Blob data behind a small driver protocol shaped like an object store.

``base``      the protocol every driver implements, and the storage errors
``paths``     the storage layout, written down once
``filesystem`` the default driver
``checked``   the wrapper that validates keys before any driver sees them
"""

from dockyard.storage.base import StorageDriver, StorageError, PathNotFound, ObjectInfo
from dockyard.storage.factory import open_driver

__all__ = ["StorageDriver", "StorageError", "PathNotFound", "ObjectInfo", "open_driver"]
