"""Lean routes for the hottest WADO-RS GETs: a viewer scrolling a CT fetches a frame per slice.

FastAPI's routing (every route of every included router is tried, and the chosen router is
matched again) and its dependency solving (a thread hop per blocking dependency) cost about
2 ms of CPU per request: more than reading a 512 KB frame. A :class:`FastGet` route stands in
front of FastAPI's routes and takes a request only when it is a GET whose path parameters are
all valid; anything else (an invalid UID, another method) falls through to the FastAPI route of
the same path, which stays the documented one (OpenAPI) and answers its validation errors.

The answer is made by the same function as the FastAPI route's, for the same caller
(:func:`~imaging_hub.worklist.dicomweb.common.open_caller`: the credentials checked on every
request, the permission, then scope and audit in the domain), with the same error mapping
(exceptions reach the app's handlers), in one worker thread instead of FastAPI's four.

A worker thread costs a hop both ways (about 0.2 ms of CPU): when the database is a local
SQLite file and the objects are local files (``HubState.inline_sessions``), a bearer request is
first answered on the event loop itself, where the reads are short (indexed SELECTs that never
wait for writers in WAL mode, one ``pread`` of a frame whose place is known). Whatever would
write or take long (an access to record in the audit trail, a browser session to extend, a
frame layout to read from the header, decoding, more than :data:`INLINE_READ_BYTES`) raises
:class:`~imaging_hub.worklist.dicomweb.reader.NeedsWorker` before any effect, as does a
database that is busy for 20 ms; the answer is then made again, from the start, in a worker
thread.
"""

from collections.abc import Callable, Mapping

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route
from starlette.types import Scope

from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.dicomweb.common import open_caller
from imaging_hub.worklist.dicomweb.reader import DicomwebReader, NeedsWorker
from imaging_hub.worklist.http.deps import HubState, bearer_credentials, get_state

#: Makes the answer: (caller, hub state, request) -> response. In a worker thread, or on the
#: event loop when ``caller.inline``: then it raises NeedsWorker before anything long.
Handler = Callable[[DicomwebReader, HubState, Request], Response]
#: Whether a path parameter's value is one the FastAPI route would accept.
Check = Callable[[str], bool]
#: At most this many bytes are read on the event loop (a CT or MR slice; not a radiograph).
INLINE_READ_BYTES = 1 << 20


class FastGet(Route):
    """A GET route answered by *handler* for a caller holding *permission*.

    It matches only GET requests whose path parameters all pass *checks* (one per parameter,
    mirroring the FastAPI route's validation); other requests fall through to later routes.
    """

    def __init__(
        self, path: str, handler: Handler, *, permission: Permission, checks: Mapping[str, Check]
    ) -> None:
        async def endpoint(request: Request) -> Response:
            credentials = await bearer_credentials(request)
            state = await get_state(request)

            def answer(inline: bool) -> Response:
                with open_caller(request, state, credentials, permission, inline=inline) as caller:
                    return handler(caller, state, request)

            if state.inline_sessions is not None and credentials is not None:
                try:
                    return answer(True)
                except (NeedsWorker, OperationalError, PoolTimeout):
                    pass  # made again, from the start, in a worker thread
            return await run_in_threadpool(answer, False)

        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)
        if set(checks) != set(self.param_convertors):
            raise ValueError(f"Every path parameter of {path} needs a check.")
        self.checks = dict(checks)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET":
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        params = child_scope["path_params"]
        if not all(check(params[name]) for name, check in self.checks.items()):
            return Match.NONE, {}
        return match, child_scope
