"""The local stack: an embedded AWS emulator and an HTTP server in front of the Chalice app."""
