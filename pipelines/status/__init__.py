"""`supir-data status` and `query`: read the catalog."""
