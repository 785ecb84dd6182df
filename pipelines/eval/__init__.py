"""`supir-data eval`: the paper's Table 1 protocol on the engine, with a side-by-side gallery."""
