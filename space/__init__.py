"""The Hugging Face Space (Docker SDK): its card (space/README.md) and `python -m space.publish`."""
