"""Deterministic YAML text of compiled documents: `dump_yaml`.

Owns: the one YAML style of cellpipe's KFP output: keys sorted, block style, multi-line
strings as literal blocks (``|``) where YAML allows it, one document per PipelineSpec /
PlatformSpec separated by ``---``, and a trailing newline.

Invariants: equal documents give byte-identical text (on any platform); the text loads back
to the same documents with any YAML loader. PyYAML is imported here only.

Must not depend on: the runner, storage, kfp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

HEADER = "# PIPELINE DEFINITION (compiled by cellpipe; edit the notebook, not this file)\n"


# libyaml's emitter is ~20x faster than PyYAML's pure-Python one (3.5 MB for 200 steps);
# both emit the same text for the plain scalars, maps and lists the compiler produces.
_Base: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):  # type: ignore[misc]  # untyped base
    """SafeDumper (libyaml's when present) with literal blocks for multi-line strings."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(documents: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Return the YAML text of one document or of several (``---`` between them).

    Args:
        documents: a document or a list of documents (PipelineSpec, then PlatformSpec).

    Returns:
        The text, ending with a newline.
    """
    docs = [documents] if isinstance(documents, Mapping) else list(documents)
    parts = [
        yaml.dump(
            _plain(doc),
            Dumper=_Dumper,
            sort_keys=True,
            default_flow_style=False,
            allow_unicode=False,
            width=100,
            indent=2,
        )
        for doc in docs
    ]
    return HEADER + "---\n".join(parts)


def load_yaml(text: str) -> list[dict[str, Any]]:
    """Return the documents of a compiled YAML text (the inverse of `dump_yaml`)."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _plain(value: Any) -> Any:
    # MappingProxyType and tuples from the model become dicts and lists YAML knows.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
