"""The fastapi_channels demo app."""
