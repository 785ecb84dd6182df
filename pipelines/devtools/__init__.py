"""Developer tools apart from the stages: tiny models, the demo corpus, the degradation preview."""
