"""`supir-data negatives`: SDXL img2img negative-quality samples."""
