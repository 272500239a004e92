"""cellpipe.cli (see ARCHITECTURE.md)."""
