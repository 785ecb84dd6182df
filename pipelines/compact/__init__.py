"""`compact`: merge a lake's small parts into large sorted ones (see catalogs.compaction)."""
