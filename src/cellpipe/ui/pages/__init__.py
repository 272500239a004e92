"""The UI's pages: each module exposes ``routes()``, mounted by `cellpipe.ui.app.create_app`."""
