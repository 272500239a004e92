"""The models pages: ``/models``, ``/models/{name}``, ``/models/{name}/{version}``.

Owns: the registered models (`cellpipe.api.models`), a model's versions and its aliases with
their history (`cellpipe.api.alias_history`), and one version: its object, signature,
parameters and metrics, its lineage back to the run that made it (linked to ``/runs/{id}``
and drawn from `cellpipe.api.lineage` of the step output), and the command that serves it.
``{version}`` is a number or an alias (``/models/wine/production``).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.ui.layout import page
from cellpipe.ui.pages._pagekit import (
    STYLE,
    artifact_path,
    call_api,
    lineage_hrefs,
    link,
    linked_svg,
    query_path,
    run_path,
    step_path,
    table,
    value_text,
)
from cellpipe.views.format import size_text, when_text


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [
        Route("/models", models_page, methods=["GET"], name="models"),
        Route("/models/{name}", model_page, methods=["GET"], name="model"),
        Route("/models/{name}/{version}", version_page, methods=["GET"], name="model_version"),
    ]


def model_path(name: str, version: object | None = None) -> str:
    """A model's (or one version's) page path."""
    path = f"/models/{quote(name, safe='')}"
    return path if version is None else f"{path}/{quote(str(version), safe='')}"


def models_page(request: Request) -> Response:
    """Every registered model: latest version, how many, aliases."""
    listing = call_api(request, lambda: api.models(project=request.app.state.project))
    if isinstance(listing, Response):
        return listing
    rows = []
    for m in listing.to_dict()["models"]:
        aliases = ", ".join(
            link(request, model_path(m["name"], a), f"{a} → {v}") for a, v in m["aliases"].items()
        )
        rows.append(
            [
                link(request, model_path(m["name"]), m["name"]),
                "-"
                if m["latest"] is None
                else link(request, model_path(m["name"], m["latest"]), str(m["latest"])),
                escape(
                    f"{m['versions']} (+{m['archived']} archived)"
                    if m.get("archived")
                    else str(m["versions"])
                ),
                aliases or "-",
                escape(when_text(m["created_at"])),
                escape(m.get("description") or "-"),
            ]
        )
    body = (
        STYLE
        + "<h1>Models</h1>"
        + table(
            ["model", "latest", "versions", "aliases", "created (UTC)", "description"],
            rows,
            caption="Registered models",
            row_header=True,
            empty="No model is registered yet: cellpipe models register NAME --run RUN "
            "--step STEP --var VARIABLE (or cellpipe.register_model in a notebook).",
            attrs=' id="cp-models"',
        )
    )
    return page(request, "Models", body, nav="models")


def _history(request: Request, name: str, history: dict[str, Any]) -> str:
    current = [
        [
            escape(a),
            link(request, model_path(name, v), str(v)),
            f"<code>{escape(name)}@{escape(a)}</code>",
        ]
        for a, v in history["aliases"].items()
    ]
    moves = [
        [
            escape(when_text(m["moved_at"])),
            escape(m["alias"]),
            "-"
            if m["previous"] is None
            else link(request, model_path(name, m["previous"]), str(m["previous"])),
            "removed"
            if m["version"] is None
            else link(request, model_path(name, m["version"]), str(m["version"])),
        ]
        for m in reversed(history["moves"])
    ]
    return table(
        ["alias", "version", "reference"],
        current,
        caption="Aliases",
        row_header=True,
        empty="No alias.",
        attrs=' id="cp-aliases"',
    ) + table(
        ["moved (UTC)", "alias", "from", "to"],
        moves,
        caption="Alias history (newest first)",
        empty="No alias was ever set.",
        attrs=' id="cp-alias-history"',
    )


def model_page(request: Request) -> Response:
    """One model: its versions (with the run each came from) and its aliases' history."""
    name = request.path_params["name"]
    project = request.app.state.project
    listing = call_api(request, lambda: api.model_versions(name, project=project))
    if isinstance(listing, Response):
        return listing
    history = call_api(request, lambda: api.alias_history(name, project=project))
    if isinstance(history, Response):
        return history
    rows = []
    for d in reversed(listing["versions"]):
        run_id = d.get("run_id")
        rows.append(
            [
                link(request, model_path(name, d["version"]), str(d["version"])),
                escape(when_text(d["created_at"])),
                escape(", ".join(d["aliases"]) or "-"),
                "archived" if d.get("archived") else "-",
                escape(", ".join(f"{k}={v}" for k, v in (d.get("tags") or {}).items()) or "-"),
                link(request, run_path(run_id), run_id) if run_id else "-",
                escape(d.get("step") or "-"),
                escape(d.get("variable") or "-"),
                escape(
                    ", ".join(f"{k}={value_text(x)}" for k, x in (d.get("metrics") or {}).items())
                    or "-"
                ),
            ]
        )
    body = (
        STYLE
        + f"<h1>Model {escape(name)}</h1>"
        + "<p>Serve the newest version: "
        + f'<code class="cp-cmd">cellpipe serve {escape(name)}</code></p>'
        + table(
            [
                "version",
                "registered (UTC)",
                "aliases",
                "archived",
                "tags",
                "run",
                "step",
                "variable",
                "metrics",
            ],
            rows,
            caption="Versions (newest first)",
            row_header=True,
            attrs=' id="cp-versions"',
        )
        + _history(request, name, history)
    )
    return page(request, f"Model {name}", body, nav="models")


def _signature(signature: dict[str, Any] | None) -> str:
    rows = [
        [
            escape(kind[:-1]),
            escape(str(t.get("name"))),
            escape(str(t.get("datatype"))),
            escape(str(t.get("shape"))),
        ]
        for kind in ("inputs", "outputs")
        for t in (signature or {}).get(kind, [])
    ]
    return table(
        ["", "tensor", "datatype", "shape"],
        rows,
        caption="Signature",
        empty="No signature was inferred for this object.",
        attrs=' id="cp-signature"',
    )


def _pairs(items: dict[str, Any], caption: str) -> str:
    rows = [[escape(k), escape(value_text(v))] for k, v in items.items()]
    return table(["name", "value"], rows, caption=caption, row_header=True)


def version_page(request: Request) -> Response:
    """One version: object, run, signature, parameters, metrics, lineage, how to serve it."""
    name = request.path_params["name"]
    version = request.path_params["version"]
    ref = f"{name}:{version}" if version.isascii() and version.isdigit() else f"{name}@{version}"
    project = request.app.state.project
    detail = call_api(request, lambda: api.models(ref, project=project))
    if isinstance(detail, Response):
        return detail
    d = detail.to_dict()
    number = d["version"]
    artifact = d.get("artifact") or {}
    run_id, step, variable = d.get("run_id"), d.get("step"), d.get("variable")
    size = artifact.get("size")
    facts = [
        ["version", escape(str(number))],
        ["aliases", escape(", ".join(d["aliases"]) or "-")],
        ["registered (UTC)", escape(when_text(d["created_at"]))],
        ["object", escape(str(artifact.get("type") or "-"))],
        ["size", escape(size_text(size) if isinstance(size, int) else "-")],
        [
            "artifact",
            f"<code>{escape(str(artifact.get('digest') or '-'))}</code>"
            + (
                " " + link(request, artifact_path(artifact["digest"]), "download")
                if artifact.get("digest")
                else ""
            ),
        ],
        ["run", link(request, run_path(run_id), run_id) if run_id else "-"],
        ["step", link(request, step_path(run_id, step), step) if run_id and step else "-"],
        ["variable", escape(variable or "-")],
        ["description", escape(d.get("description") or "-")],
        ["archived", "yes (NAME and NAME@latest skip it)" if d.get("archived") else "no"],
        [
            "tags",
            escape(", ".join(f"{k}={v}" for k, v in (d.get("tags") or {}).items()) or "-"),
        ],
        [
            "packages",
            escape(", ".join(f"{k}=={v}" for k, v in (d.get("packages") or {}).items()) or "-"),
        ],
    ]
    serve = [f"cellpipe serve {name}:{number}"] + [
        f"cellpipe serve {name}@{a}" for a in d["aliases"]
    ]
    lineage = ""
    if run_id and step and variable:
        view = call_api(
            request, lambda: api.lineage(run_id, step=step, variable=variable, project=project)
        )
        if not isinstance(view, Response):
            from cellpipe.views.lineage import to_svg

            full = query_path("/lineage", [("run", run_id), ("step", step), ("var", variable)])
            lineage = (
                "<h2>Lineage back to its run</h2>"
                + f"<p>From run {link(request, run_path(run_id), run_id)}, step "
                + f"{link(request, step_path(run_id, step), step)}, variable "
                + f"<code>{escape(variable)}</code> "
                + f"({link(request, full, 'the full lineage page')}).</p>"
                + '<div class="cp-graph-scroll" id="cp-model-lineage">'
                + linked_svg(request, to_svg(view.graph), lineage_hrefs(view.to_dict()))
                + "</div>"
            )
    else:
        lineage = (
            "<h2>Lineage</h2><p>This version was registered from a value, not a run's output.</p>"
        )
    body = (
        STYLE
        + f"<h1>Model {escape(name)} version {escape(str(number))}</h1>"
        + f"<p>{link(request, model_path(name), 'All versions of ' + name)}</p>"
        + table(
            ["field", "value"],
            [[escape(k), v] for k, v in facts],
            caption="This version",
            row_header=True,
            attrs=' id="cp-version"',
        )
        + "<h2>Serve it</h2>"
        + "".join(f'<p><code class="cp-cmd">{escape(s)}</code></p>' for s in serve)
        + _signature(d.get("signature"))
        + _pairs(d.get("parameters") or {}, "Parameters of its run")
        + _pairs(d.get("metrics") or {}, "Metrics of its run")
        + lineage
    )
    return page(request, f"Model {name}:{number}", body, nav="models")
