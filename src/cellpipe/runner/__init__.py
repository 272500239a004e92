"""cellpipe.runner (see ARCHITECTURE.md)."""
