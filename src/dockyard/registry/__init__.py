"""The registry's operations, HTTP-free: what a pull, a push, a delete does.

Each function takes the :class:`~dockyard.registry.context.Registry` (database,
storage, clock, settings), runs one transaction per step and raises
:class:`~dockyard.errors.RegistryError` for anything a client did wrong.
All of it is blocking code; ``api`` calls it from worker threads.
"""
