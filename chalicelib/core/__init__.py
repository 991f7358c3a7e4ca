"""Leaf rules and platform pieces below every other package: the domain errors, settings,
observability, validation, clocks, names and limits that every layer may use."""
