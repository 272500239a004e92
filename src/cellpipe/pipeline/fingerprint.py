"""Fingerprints of code and values, and the cache key of a step.

Owns: code normalisation (comments, docstrings and layout do not count), canonical JSON of
parameter values, the labelled cache-key fields of a step, the key itself, and the words that
explain why two sets of fields differ (``cellpipe why``).

Invariants: pure functions of their arguments; no I/O; the key changes whenever a field's
value changes and never otherwise; labels never contain cell numbers (inserting a markdown cell
must not invalidate the cache), the explanation maps positions back to cells.

Must not depend on: notebooks, storage, the runner.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import tokenize
from collections.abc import Mapping, Sequence

from cellpipe.pipeline.model import CodeChunk, JsonValue, Step

KEY_FORMAT_VERSION = "2"  # 2: the versions of the packages the step imports
"""Bumped whenever the fields or their encoding change, so old keys can never match."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                # A docstring is documentation, not behaviour.
                del body[0]
                if not body and not isinstance(node, ast.Module):
                    body.append(ast.Pass())


def normalize_code(python: str) -> str:
    """Return a form of the code that ignores comments, docstrings and layout.

    Args:
        python: plain Python source (magics already transformed).

    Returns:
        The `ast.dump` of the code without docstrings; for code that does not parse, the
        token stream without comments and whitespace.
    """
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return _normalize_tokens(python)
    _strip_docstrings(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _normalize_tokens(python: str) -> str:
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    parts: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(python).readline):
            if tok.type not in skip:
                parts.append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        # Unfinished code: the tokens read so far are still a faithful, comment-free form.
        pass
    return " ".join(parts)


def code_fingerprint(chunks: Sequence[CodeChunk]) -> str:
    """Return the SHA-256 hex of the normalised code of ``chunks``, cell boundaries included."""
    return _sha256("\x1e".join(normalize_code(c.python) for c in chunks))


def canonical_json(value: JsonValue) -> str:
    """Return the canonical JSON text of a parameter value (sorted keys, no spaces).

    Raises:
        TypeError: for a value that is not JSON (no silent ``str()`` fallback).
        ValueError: for NaN or infinity.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def step_cache_fields(
    step: Step,
    *,
    imports: Sequence[CodeChunk],
    functions: Sequence[CodeChunk],
    parameters: Mapping[str, JsonValue],
    input_digests: Mapping[str, str],
    serializer_versions: Mapping[str, int],
) -> dict[str, str]:
    """Return the labelled fields of a step's cache key.

    Args:
        step: the step.
        imports: the pipeline's imports cells (they run before every step).
        functions: the pipeline's functions cells (they run before every step).
        parameters: the run's parameter values; only those the step reads are used.
        input_digests: input variable -> artifact digest of the value it will receive.
        serializer_versions: serializer name -> format version.

    Returns:
        label -> value. Labels: ``format``, ``step``, ``code[i]`` (i-th cell of the step),
        ``imports[i]``, ``functions[i]``, ``param:NAME`` (canonical JSON of the value),
        ``input:NAME`` (digest), ``package:DISTRIBUTION`` (its installed version; the step's
        packages include those of the imports and functions cells), ``serializers`` and
        ``outputs``.
    """
    fields: dict[str, str] = {
        # Old keys must never match once the encoding of these fields changes.
        "format": KEY_FORMAT_VERSION,
        # Two steps with the same code are still different steps with different records.
        "step": step.name,
        # The outputs to save are part of what the step produces.
        "outputs": ",".join(step.outputs),
        # A changed serializer may read or write values differently.
        "serializers": canonical_json(dict(sorted(serializer_versions.items()))),
    }
    # Each cell separately, so `why` can say which cell changed.
    for label, chunks in (("code", step.code), ("imports", imports), ("functions", functions)):
        for i, chunk in enumerate(chunks):
            fields[f"{label}[{i}]"] = _sha256(normalize_code(chunk.python))
    # Only the parameters the step reads: changing another one must not re-run it.
    for name in step.parameters:
        fields[f"param:{name}"] = canonical_json(parameters[name])
    # The values it receives, by content.
    for name in sorted(input_digests):
        fields[f"input:{name}"] = input_digests[name]
    # The installed versions of what it imports: an upgraded library may compute differently.
    for package in step.packages:
        fields[f"package:{package.distribution or package.module}"] = (
            package.version or "not installed"
        )
    return fields


def cache_key(fields: Mapping[str, str]) -> str:
    """Return ``sha256:<hex>`` over the labelled fields (order-independent, unambiguous)."""
    digest = hashlib.sha256()
    for label in sorted(fields):
        # Length-prefixed so no two field sets can encode to the same bytes.
        for part in (label, fields[label]):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return "sha256:" + digest.hexdigest()


def explain_difference(
    old: Mapping[str, str],
    new: Mapping[str, str],
    *,
    step: Step,
    imports: Sequence[CodeChunk] = (),
    functions: Sequence[CodeChunk] = (),
) -> list[str]:
    """Say, in words, how two sets of cache fields differ.

    Args:
        old: the fields of the earlier step run.
        new: the fields now.
        step: the step now (to name cells).
        imports: the imports cells now.
        functions: the functions cells now.

    Returns:
        Sentences such as ``code of cell 7 changed``, ``parameter MAX_DEPTH changed 4 → 6``,
        ``input x_trn changed``, ``package scikit-learn changed 1.5.0 → 1.6.1``; empty when the
        fields are equal.
    """
    cells = {"code": step.code, "imports": imports, "functions": functions}
    reasons: list[str] = []
    for label in sorted(set(old) | set(new), key=_label_order):
        before, after = old.get(label), new.get(label)
        if before == after:
            continue
        reasons.append(_describe(label, before, after, cells))
    return reasons


def _label_order(label: str) -> tuple[int, str]:
    order = ["format", "serializers", "step", "outputs", "imports", "functions", "code"]
    head = label.split("[", 1)[0].split(":", 1)[0]
    rank = order.index(head) if head in order else len(order)
    return rank, label


def _describe(
    label: str, before: str | None, after: str | None, cells: Mapping[str, Sequence[CodeChunk]]
) -> str:
    if label.startswith("param:"):
        name = label.removeprefix("param:")
        if before is None:
            return f"now reads parameter {name}"
        if after is None:
            return f"no longer reads parameter {name}"
        return f"parameter {name} changed {before} → {after}"
    if label.startswith("package:"):
        name = label.removeprefix("package:")
        if before is None:
            return f"now imports package {name} {after}"
        if after is None:
            return f"no longer imports package {name}"
        return f"package {name} changed {before} → {after}"
    if label.startswith("input:"):
        name = label.removeprefix("input:")
        if before is None:
            return f"new input {name}"
        if after is None:
            return f"input {name} removed"
        return f"input {name} changed"
    kind, _, index = label.partition("[")
    if kind in cells and index:
        position = int(index.rstrip("]"))
        chunks = cells[kind]
        if before is None:
            return f"{kind} cell added"
        if after is None:
            return f"{kind} cell removed"
        if position < len(chunks):
            return f"{kind} of cell {chunks[position].cell} changed"
        return f"{kind} changed"
    if label == "format":
        return "cache key format changed (new cellpipe version)"
    if label == "serializers":
        return "serializer versions changed (new cellpipe version)"
    if label == "outputs":
        return f"outputs changed ({before or 'none'} → {after or 'none'})"
    return f"{label} changed"
