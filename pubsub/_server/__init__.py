"""Layers 3-5, the server: the ``/ws`` transport, REST, metrics, auth, and the
composition root that puts a node, its engine and one listener together."""
