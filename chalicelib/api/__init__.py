"""The admin HTTP edge: JSON bodies, ids in paths, the admin key, errors as JSON, and the
OpenAPI document built from the route table. The only package that knows Chalice."""
