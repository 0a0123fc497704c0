"""The wire, shared by both ends: message transports (WebSocket, stdio lines, memory
pairs), the WebSocket I/O shell and its opening handshakes, the HTTP request head,
file URIs, trace propagation, and the public sandbox intent builder.

Imports only ``_core`` and ``protocol_schema`` of ours (``tests/test_layers.py``).
"""
