"""cellpipe.ui (see ARCHITECTURE.md)."""
