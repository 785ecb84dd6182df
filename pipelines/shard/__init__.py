"""`supir-data shard` and `verify`: WebDataset tars for the trainer."""
