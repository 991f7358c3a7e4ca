"""The local stack: an embedded AWS emulator, an HTTP server in front of the Chalice app, the mock vLLM
replica and the fake Hyperstack. Outside chalicelib/, so that none of it ships in the Lambda zip."""
