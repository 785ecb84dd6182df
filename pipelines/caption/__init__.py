"""`supir-data caption`: LLaVA-1.5 captions on a model actor pool."""
