"""The engine: the one way a stage runs on Ray."""
