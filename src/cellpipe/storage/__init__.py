"""cellpipe.storage (see ARCHITECTURE.md)."""
