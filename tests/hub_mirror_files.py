"""The hub mirror's file route, ``/{repo}/resolve/{revision}/{path}`` (see :mod:`tests.hub_mirror`).

Like the hub it answers HEAD and GET with the headers ``huggingface_hub`` reads:
``X-Repo-Commit``, an ``ETag`` and, for an LFS file, ``X-Linked-Etag`` (the SHA-256) and
``X-Linked-Size``. A ``Range: bytes=START-[END]`` request gets 206 with ``Content-Range``
(416 past the end), unless ``faults.ignore_range`` says to answer 200 with the whole file.
``If-Range`` is honoured as HTTP says: a range is served only while the file's ETag is the
one given, otherwise the whole file comes back with 200 (a file that changed on the hub).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, AsyncIterator

__all__ = ["routes"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def routes(mirror: Any) -> list:
    """The file routes for ``mirror`` (GET and HEAD, with Range, ETag and the LFS headers)."""
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    def find(request):
        parts = request.path_params["rest"].split("/")
        # {owner}/{name}/resolve/{revision}/{path...}
        if len(parts) < 5 or parts[2] != "resolve":
            return None, None, None
        repo = mirror.repos.get("/".join(parts[:2]))
        path = "/".join(parts[4:])
        if repo is None or path not in repo.files:
            return None, None, None
        return repo, parts[3], path

    async def resolve(request):
        mirror.record(request.method, request.url.path, dict(request.headers))
        faults = mirror.faults
        repo, _revision, path = find(request)
        if repo is None:
            return Response("Entry not found", status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        token = repo.token or faults.token
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            code = "GatedRepo" if repo.gated else "RepoNotFound"
            return Response("Access to this repository is restricted.", status_code=401 if not repo.gated else 403,
                            headers={"X-Error-Code": code, "X-Error-Message": "Access restricted"})
        if faults.failures_left > 0:
            faults.failures_left -= 1
            return Response("try again later", status_code=faults.fail_status)
        size = repo.size(path)
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            sha = repo.sha256(path)
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)})
        else:
            headers["ETag"] = f'"{repo.sha256(path)[:40]}"'
        start, end, status = 0, size - 1, 200
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range != headers["ETag"]:
            wanted = None  # the validator is stale: the client's bytes are of another file
        if wanted and not faults.ignore_range:
            match = _RANGE.match(wanted.strip())
            if match is None:
                return Response("bad range", status_code=416, headers={"Content-Range": f"bytes */{size}"})
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
            if start >= size or start > end:
                return Response("range not satisfiable", status_code=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            if faults.misplaced_range:
                start = min(end, start + faults.misplaced_range)  # a broken server: another part than asked
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(_body(mirror, repo.files[path], start, end), status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    return [Route("/{rest:path}", resolve, methods=["GET", "HEAD"])]


async def _body(mirror: Any, data: bytes | Path, start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes ``start..end`` (inclusive), in chunks; a drop fault ends the stream early."""
    faults = mirror.faults
    sent, position = 0, start
    handle = data.open("rb") if isinstance(data, Path) else None
    try:
        if handle is not None:
            handle.seek(start)
        while position <= end:
            n = min(faults.chunk_size, end - position + 1)
            if faults.hold_after_bytes is not None:
                n = min(n, max(0, faults.hold_after_bytes - sent))
                if n == 0:
                    faults.hold_after_bytes = None
                    faults.held.set()
                    while not faults.release.is_set():
                        await asyncio.sleep(0.01)
                    continue
            if faults.drops_left > 0 and faults.drop_after_bytes is not None:
                n = min(n, max(0, faults.drop_after_bytes - sent))
                if n == 0:
                    faults.drops_left -= 1
                    # Ending the body before Content-Length makes the server drop the connection.
                    raise ConnectionError("the mirror dropped the connection (test fault)")
            chunk = handle.read(n) if handle is not None else data[position:position + n]
            yield chunk
            sent += n
            position += n
            if faults.chunk_delay:
                await asyncio.sleep(faults.chunk_delay)
    finally:
        if handle is not None:
            handle.close()
