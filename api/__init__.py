"""The unet3d service: one FastAPI app (HTTP API + Prometheus metrics) with the Gradio review UI mounted at /ui."""
