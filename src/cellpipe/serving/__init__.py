"""cellpipe.serving (see ARCHITECTURE.md)."""
