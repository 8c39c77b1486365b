"""Layer 2, the broker core on one node: topic actors, sessions and their
outboxes, and the :class:`~pubsub._core.engine.Engine` interface through which
the node reaches what is cluster-wide. Imports trio, msgspec and ``_protocol``;
never a web framework, a transport or an engine implementation."""
