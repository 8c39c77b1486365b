"""Layer 1, the wire contract, sans-IO: frames, error codes, timestamps and the
WebSocket message rules. Imports msgspec and wsproto, never trio."""
