"""Who may call the worker API: a bearer token for every mutation (and, if configured, reads).

The token is ``api.token`` or the one generated in ``<home>/api-token`` (``Settings.api_token``);
the tools and the other workers of a machine read it from there. ``POST /query`` and
``POST /whatif`` are reads (ClickHouse runs the SQL read-only; what-if writes nothing).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flowlogs.settings import Settings

if TYPE_CHECKING:  # clients import `bearer` without loading Faust
    from faust.web import Request, Response, View

Handler = Callable[..., Awaitable["Response"]]


class ApiGuard:
    def __init__(self, settings: Settings) -> None:
        self._expected = f"Bearer {settings.api_token()}"
        self._reads_too = settings.api.token_for_reads

    def authorized(self, request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", ""), self._expected)

    def _guard(self, handler: Handler, *, mutation: bool) -> Handler:
        @functools.wraps(handler)
        async def guarded(view: View, request: Request, **kwargs: Any) -> Response:
            if (mutation or self._reads_too) and not self.authorized(request):
                given = "Authorization" in request.headers
                return view.json(
                    {"error": ("the API token is wrong" if given else "this needs the API token")
                     + ": send 'Authorization: Bearer <token>' (api.token, or the file <home>/api-token)"},
                    status=401,
                )
            return await handler(view, request, **kwargs)

        return guarded

    def mutation(self, handler: Handler) -> Handler:
        return self._guard(handler, mutation=True)

    def read(self, handler: Handler) -> Handler:
        return self._guard(handler, mutation=False)


def bearer(settings: Settings) -> dict[str, str]:
    """The header a client of the worker API sends."""
    return {"Authorization": f"Bearer {settings.api_token()}"}
