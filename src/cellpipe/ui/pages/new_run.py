"""The start-run form: ``/new`` (pick a notebook, edit its parameters, run).

Owns: ``GET /new`` (the project's notebooks; with ``?notebook=PATH`` that notebook's declared
parameters as typed fields: int and float as number inputs, bool as a checkbox, anything else
as text, each with its default or the value of a ``param.NAME`` query parameter) and
``POST /new`` (starts the run through the app's `cellpipe.ui.live.RunManager` and redirects
to ``/runs/{run_id}``, which follows it live; a refused request shows the form again with the
error, escaped, and the values given).

Invariants: every value is escaped; the notebook list and the parameters come from
`cellpipe.api` (`project_notebooks`, `run_form`); the run is started and checked by
`cellpipe.api.run_command` (the same parameter parsing as ``cellpipe run -p``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.errors import CellpipeError
from cellpipe.ui.layout import page, url
from cellpipe.ui.live import form_fields, manager_of

NUMBER_STEP = {"int": "1", "float": "any"}


def _text(value: Any, kind: str) -> str:
    """A default as the text ``-p`` takes (strings as they are, the rest as JSON)."""
    if kind == "str" and isinstance(value, str):
        return value
    return json.dumps(value)


def _field(param: Mapping[str, Any], given: Mapping[str, str]) -> str:
    name, kind, default = str(param["name"]), str(param["type"]), param["default"]
    ident = f"p-{name}"
    field_name = f"param.{name}"
    where = f"cell {param.get('cell')}" if param.get("cell") else ""
    hint = f"{kind}, default {_text(default, kind)}" + (f", {where}" if where else "")
    hint_id = f"{ident}-hint"
    described = f' aria-describedby="{escape(hint_id)}"'
    if kind == "bool":
        checked = given.get(name, "true" if default else "false").lower() in {
            "true",
            "1",
            "yes",
            "on",
        }
        control = (
            f'<input type="hidden" name="{escape(field_name)}" value="false">'
            f'<input type="checkbox" id="{escape(ident)}" name="{escape(field_name)}" '
            f'value="true"{" checked" if checked else ""}{described}>'
        )
    else:
        value = given.get(name, _text(default, kind))
        if kind in NUMBER_STEP:
            control = (
                f'<input type="number" step="{NUMBER_STEP[kind]}" id="{escape(ident)}" '
                f'name="{escape(field_name)}" value="{escape(value)}" required{described}>'
            )
        else:
            control = (
                f'<input type="text" id="{escape(ident)}" name="{escape(field_name)}" '
                f'value="{escape(value)}"{described}>'
            )
    return (
        f'<div class="cp-field" data-type="{escape(kind)}">'
        f'<label for="{escape(ident)}">{escape(name)}</label> {control} '
        f'<small id="{escape(hint_id)}" class="cp-hint">{escape(hint)}</small></div>'
    )


def _picker(request: Request, notebooks: list[str], chosen: str) -> str:
    if not notebooks:
        return (
            "<p>This project has no notebooks (<code>.ipynb</code> files or percent scripts).</p>"
        )
    options = "".join(
        f'<option value="{escape(nb)}"{" selected" if nb == chosen else ""}>{escape(nb)}</option>'
        for nb in notebooks
    )
    return (
        f'<form class="cp-pick" method="get" action="{escape(url(request, "/new"))}">'
        '<label for="cp-notebook">Notebook</label> '
        f'<select id="cp-notebook" name="notebook">{options}</select> '
        '<button type="submit">Choose</button></form>'
    )


def _form(
    request: Request,
    notebooks: list[str],
    chosen: str,
    *,
    given: Mapping[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    body = ["<h1>New run</h1>", _picker(request, notebooks, chosen)]
    if error:
        body.append(
            '<div class="cp-error" role="alert" id="cp-form-error">'
            f"<p><strong>The run did not start.</strong></p><pre>{escape(error)}</pre></div>"
        )
    if chosen:
        form = api.run_form(chosen, project=request.app.state.project)
        if not form["ok"]:
            body.append(
                f'<div class="cp-error" role="alert"><p>{escape(chosen)} cannot run:</p>'
                f"<pre>{escape(str(form['error']))}</pre></div>"
            )
        else:
            fields = "".join(_field(p, given or {}) for p in form["parameters"])
            if not fields:
                fields = "<p>This notebook declares no parameters.</p>"
            body.append(
                f'<form class="cp-run-form" method="post" action="{escape(url(request, "/new"))}">'
                f'<input type="hidden" name="notebook" value="{escape(chosen)}">'
                f"<fieldset><legend>Parameters of {escape(chosen)}</legend>{fields}</fieldset>"
                '<button type="submit" id="cp-run">Run</button></form>'
            )
    return page(request, "New run", "".join(body), nav="new", status_code=status_code)


async def new_run_page(request: Request) -> Response:
    """``GET /new``: pick a notebook; its parameters as a typed form."""
    project = request.app.state.project
    try:
        notebooks = await run_in_threadpool(api.project_notebooks, project)
    except CellpipeError as error:
        return page(
            request,
            "New run",
            f'<h1>New run</h1><div class="cp-error" role="alert"><pre>{escape(str(error))}'
            "</pre></div>",
            nav="new",
            status_code=404,
        )
    chosen = request.query_params.get("notebook") or ""
    if not chosen and len(notebooks) == 1:
        chosen = notebooks[0]
    # `?param.NAME=VALUE` fills a field (a link that runs again with other values).
    given = {
        key[len("param.") :]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("param.")
    }
    return await run_in_threadpool(lambda: _form(request, notebooks, chosen, given=given))


async def start_from_form(request: Request) -> Response:
    """``POST /new``: start the run; to its page, or the form again with the error."""
    notebook, params = form_fields(await request.body())
    project = request.app.state.project
    try:
        live = await run_in_threadpool(manager_of(request.app).start, notebook, params)
    except CellpipeError as error:
        message = str(error)
    else:
        target = url(request, "/runs/" + quote(live.run_id or "", safe=""))
        return RedirectResponse(target, status_code=303)
    try:
        notebooks = await run_in_threadpool(api.project_notebooks, project)
    except CellpipeError:
        notebooks = []
    return await run_in_threadpool(
        lambda: _form(request, notebooks, notebook, given=params, error=message, status_code=400)
    )


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return [
        Route("/new", new_run_page, methods=["GET"], name="new_run"),
        Route("/new", start_from_form, methods=["POST"], name="start_run"),
    ]
