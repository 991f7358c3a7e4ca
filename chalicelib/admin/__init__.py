"""The control plane's logic: users' keys, models, replicas, usage, the table view and the
admin API's request schemas. No HTTP: the api package parses and shapes."""
