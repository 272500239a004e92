"""cellpipe.registry (see ARCHITECTURE.md)."""
