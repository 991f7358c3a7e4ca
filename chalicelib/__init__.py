"""Domain code of the Hyperstack LLM inference proxy; `app.py` holds only the routes."""
