"""cellpipe.kfp (see ARCHITECTURE.md)."""
