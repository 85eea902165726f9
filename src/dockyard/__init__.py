"""dockyard: an OCI image registry whose storage never leaks and whose deletes are safe."""

__version__ = "0.1.0"
