"""Transports that stand in for the network where a test is about something else."""

from __future__ import annotations

import hookdispatch as hd


class Recording:
    """Answers 200 to every request and remembers the URLs it was asked to POST to
    (and the requests, in ``requests``)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.requests: list[hd.Request] = []

    def send(self, request: hd.Request) -> hd.Response:
        self.urls.append(request.url)
        self.requests.append(request)
        return hd.Response(status_code=200, headers={}, body=b"")

    def close(self) -> None:
        pass


class AsyncRecording(Recording):
    """The same, for AsyncDispatcher."""

    async def send(self, request: hd.Request) -> hd.Response:  # type: ignore[override]
        return Recording.send(self, request)

    async def aclose(self) -> None:
        pass


def recording(driver: str) -> Recording:
    """A recording transport for the driver ("sync" or "async") under test."""
    return AsyncRecording() if driver == "async" else Recording()
