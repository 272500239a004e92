"""The product's views: what a run, a step, a comparison, lineage or a model looks like.

Owns: the documents (plain dicts, the ``--json`` output), the text/mermaid/dot renderers and
the HTML views that the CLI, the notebook (``_repr_html_``, the live view) and the web UI all
render. Views are pure functions of records; gathering the records is `cellpipe.api`'s job.

Must not depend on: api, cli, ui.
"""
