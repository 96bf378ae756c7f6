"""The test client of a srcore app: it closes each response as a WSGI server would."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

__all__ = ["ClosingClient"]


class ClosingClient(FlaskClient):
    """Reads each response whole and closes it before handing it over.

    Flask's client leaves a response's iterable open, so a file a view sent stays open
    until the garbage collector comes: its ResourceWarning then lands in whichever test
    runs at that moment, far from the request that caused it. A test that wants a stream
    piece by piece asks for ``buffered=False`` and closes the response itself.
    """

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> TestResponse:
        return super().open(*args, buffered=buffered, **kwargs)
