"""`supir-data ingest`: scan, decode defensively, judge quality, deduplicate."""
