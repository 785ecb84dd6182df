"""supir."""
