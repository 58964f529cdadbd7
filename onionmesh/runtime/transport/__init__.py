"""Moving bytes: links over TCP and WebSocket, the socket-to-stream pump, accept loops, the memory guard."""
