"""Layer 2b, engines: implementations of :class:`pubsub._core.engine.Engine`.
:class:`~pubsub._engines.memory.MemoryEngine` keeps everything in this process."""
