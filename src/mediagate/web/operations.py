"""An operation of the HTTP API declared once, beside its handler: its route and its
OpenAPI description together.

A handler module makes one `Operations` (its tag in the document) and declares each
handler with it; web/api.py lists the modules, web/app.py adds their routes and
web/openapi.py builds the document from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from mediagate import errors
from mediagate.web.cors import CorsPaths

Problems = tuple[type[errors.Problem], ...]
AnyHandler = TypeVar("AnyHandler", bound=Handler)

# A `maximum` that is this server's MEDIAGATE_MAX_UPLOAD_SIZE (a larger size is 413),
# filled in when the document is built; in a parameter's schema or a model's field.
MAX_UPLOAD_SIZE = "MEDIAGATE_MAX_UPLOAD_SIZE"

# Any request may meet these: a malformed Host (web/host.py), HTTP the server cannot
# parse (web/protocol.py), a server going down, or a failure of its own.
ALWAYS: Problems = (
    errors.BadRequest,
    errors.MalformedRequest,
    errors.ShuttingDown,
    errors.Problem,
)
# Every operation that takes a token reads or writes the catalog, which may be away,
# and may need the identity provider's keys to check the token.
AUTHENTICATED: Problems = (
    errors.Unauthorized,
    errors.CatalogUnavailable,
    errors.IdentityProviderUnavailable,
)
STORAGE: Problems = (
    errors.StorageUnavailable,
    errors.StorageRejected,
    errors.StorageFull,
    errors.FileTooLargeForStorage,
)
# The pre-create and pre-finish hooks' answers (core/hooks.py): a refusal is listed at its
# default status, 403; the application may choose any other 4xx.
HOOKS: Problems = (errors.UploadRefused, errors.HookUnavailable)

BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}
ANY_BYTES: dict[str, Any] = {"*/*": {"schema": {}}}

# A placeholder's regular expression (`{name:regex}`), which the document leaves out.
_PLACEHOLDER_PATTERN = re.compile(r"\{([^{}:]+):[^{}]+\}")


@dataclass(frozen=True)
class Reply:
    """A success answer: JSON of `model`, or `content` as written, or no body;
    `required` headers are always on it, `headers` may be."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: dict[str, Any] | None = None
    headers: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: str
    # As the router takes it: a placeholder may carry a regular expression.
    path: str
    handler: Handler
    operation_id: str
    summary: str
    replies: tuple[Reply, ...]
    tag: str
    problems: Problems = ()
    parameters: tuple[dict[str, Any], ...] = ()
    # A JSON body of `request_model`, or `request_content` as written.
    request_model: type[BaseModel] | None = None
    request_content: dict[str, Any] | None = None
    body_required: bool = True
    # A signed stream link (`expires`, `signature`) may stand in for the bearer token.
    auth: Literal["bearer", "bearer-or-link"] | None = "bearer"
    description: str = ""
    # aiohttp answers HEAD on a GET route with the GET's status and headers.
    head: bool = True
    # On every answer of the handler: required on its replies, documented on its
    # problems (the web layer's own refusals, before the handler runs, lack them).
    answer_headers: tuple[str, ...] = ()

    @property
    def template(self) -> str:
        """The path as documented (and as aiohttp's `canonical`)."""
        return _PLACEHOLDER_PATTERN.sub(r"{\1}", self.path)


class Operations:
    """One handler module's operations, in the order declared.

    `tag` and `description` name the module's group in the document; `headers`
    describes the response headers its operations add to web/openapi.py's common ones.
    With `dispatch`, each path is one route taking any method, and `dispatch` makes its
    handler from the path's verbs (tus: `X-HTTP-Method-Override`). `cors` is what a
    browser may send to and read from its paths beyond the native API's rule.
    """

    def __init__(
        self,
        tag: str,
        description: str = "",
        *,
        headers: dict[str, dict[str, Any]] | None = None,
        dispatch: Callable[[dict[str, Handler]], Handler] | None = None,
        cors: CorsPaths | None = None,
    ) -> None:
        self.tag = tag
        self.description = description
        self.headers = headers or {}
        self.cors = cors
        self._dispatch = dispatch
        self._operations: list[Operation] = []

    def __call__(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        **description: Any,
    ) -> Callable[[AnyHandler], AnyHandler]:
        """Declare the handler below as the operation `method path` (the other
        `Operation` fields by name)."""

        def declare(handler: AnyHandler) -> AnyHandler:
            self._operations.append(
                Operation(method, path, handler, operation_id, summary, tag=self.tag, **description)
            )
            return handler

        return declare

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)

    def verbs(self) -> dict[str, dict[str, Handler]]:
        """Each path's handlers by method."""
        paths: dict[str, dict[str, Handler]] = {}
        for operation in self._operations:
            paths.setdefault(operation.path, {})[operation.method] = operation.handler
        return paths

    def routes(self) -> list[web.RouteDef]:
        if self._dispatch is not None:
            dispatch = self._dispatch
            return [web.route("*", path, dispatch(verbs)) for path, verbs in self.verbs().items()]
        return [
            web.get(operation.path, operation.handler, allow_head=operation.head)
            if operation.method == "GET"
            else web.route(operation.method, operation.path, operation.handler)
            for operation in self._operations
        ]


def parameter(
    where: Literal["path", "query", "header"],
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    required: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }
