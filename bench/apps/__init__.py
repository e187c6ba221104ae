"""The benchmarked servers, one small FastAPI app each, with the same control routes."""
