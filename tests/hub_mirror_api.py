"""The hub mirror's JSON API routes (see :mod:`tests.hub_mirror`), in the shapes ``huggingface_hub`` parses.

- ``GET /api/models``: ``list_models``. ``search`` is a case-insensitive substring of the
  repository id, each ``filter`` must be one of its tags (or its library or pipeline tag),
  ``sort`` orders by that field, most first, and ``limit`` cuts the list (one page, no
  ``Link`` header). ``expand`` picks the fields, as on the hub.
- ``GET /api/models/{owner}/{name}`` and ``.../revision/{revision}``: ``model_info``; with
  ``blobs=true`` (``files_metadata=True``) each sibling has its size and, for an LFS file,
  ``lfs: {size, sha256, pointerSize}``. ``cardData`` is the README's front matter with the
  repository's ``license`` and ``base_model`` on top.
- ``GET /api/whoami-v2``: the account of a token the mirror knows (a repository's or
  ``faults.token``); 401 for any other, 404 with ``faults.whoami_missing``.

As on the hub, a gated repository's entry is open to all (only its files want the token),
while a repository with a token that is not gated is private: 401 ``RepoNotFound`` without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["routes"]

#: What ``list_models`` gets without ``expand`` (the hub's short form).
_DEFAULT_LIST_FIELDS = ("id", "likes", "downloads", "tags", "pipeline_tag", "library_name", "createdAt", "private")


def routes(mirror: Any) -> list:
    """The API routes for ``mirror`` (search, a repository's details and files, whoami)."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def record(request) -> None:
        query = f"?{request.url.query}" if request.url.query else ""
        mirror.record(request.method, request.url.path + query, dict(request.headers))

    def not_found(what: str) -> JSONResponse:
        return JSONResponse({"error": f"{what} not found"}, status_code=404,
                            headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})

    def visible(repo, request) -> bool:
        """Private repositories (a token, not gated) are hidden from requests without their token."""
        if repo.token is None or repo.gated:
            return True
        return request.headers.get("authorization") == f"Bearer {repo.token}"

    async def list_models(request):
        record(request)
        params = request.query_params
        search = (params.get("search") or "").lower()
        filters = params.getlist("filter")
        found = [r for r in mirror.repos.values()
                 if search in r.repo_id.lower() and visible(r, request)
                 and all(f in _tags(r) or f in (r.library_name, r.pipeline_tag) for f in filters)]
        sort = params.get("sort")
        if sort:
            found.sort(key=lambda r: _entry(r).get(sort) or 0, reverse=True)
        if params.get("limit"):
            found = found[:int(params["limit"])]
        expand = params.getlist("expand")
        full = params.get("full") in ("true", "True", "1")
        fields = None if full else (["id", *expand] if expand else list(_DEFAULT_LIST_FIELDS))
        answer = []
        for repo in found:
            entry = _entry(repo)
            if params.get("cardData") not in ("true", "True", "1"):
                entry.pop("cardData")
            answer.append({"_id": entry["_id"], **{k: v for k, v in entry.items() if fields is None or k in fields}})
        return JSONResponse(answer)

    async def model_info(request):
        record(request)
        repo = mirror.repos.get(f"{request.path_params['owner']}/{request.path_params['name']}")
        if repo is None or not visible(repo, request):
            return JSONResponse({"error": "Repository not found"}, status_code=401 if repo else 404,
                                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        revision = request.path_params.get("revision")
        if revision not in (None, "main", repo.sha):
            return JSONResponse({"error": "Invalid rev id"}, status_code=404,
                                headers={"X-Error-Code": "RevisionNotFound"})
        entry = _entry(repo)
        blobs = request.query_params.get("blobs") in ("true", "True", "1")
        entry["siblings"] = [_sibling(repo, path, blobs) for path in sorted(repo.files)]
        return JSONResponse(entry)

    async def whoami(request):
        record(request)
        if mirror.faults.whoami_missing:
            return not_found("whoami")
        known = {t for t in [mirror.faults.token, *(r.token for r in mirror.repos.values())] if t}
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or given[7:] not in known:
            return JSONResponse({"error": "Invalid credentials in Authorization header"}, status_code=401,
                                headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        return JSONResponse({"type": "user", "name": "mirror-user", "fullname": "Mirror User",
                             "auth": {"type": "access_token", "accessToken": {"role": "read"}}})

    return [
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/models/{owner}/{name}/revision/{revision:path}", model_info, methods=["GET"]),
        Route("/api/models/{owner}/{name}", model_info, methods=["GET"]),
        Route("/api/whoami-v2", whoami, methods=["GET"]),
    ]


def _card_data(repo: Any) -> dict[str, Any]:
    """The README's YAML front matter, with the repository's own license and base_model over it."""
    import yaml

    from desktop_app.core.model_card import strip_front_matter

    data: dict[str, Any] = {}
    body = strip_front_matter(repo.card)
    if body != repo.card:
        front = repo.card[:len(repo.card) - len(body)].strip().strip("-")
        loaded = yaml.safe_load(front)
        data = dict(loaded) if isinstance(loaded, dict) else {}
    if repo.license:
        data["license"] = repo.license
    if repo.base_model:
        data["base_model"] = repo.base_model
    return data


def _tags(repo: Any) -> list[str]:
    tags = list(repo.tags)
    card = _card_data(repo)
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    if card.get("base_model"):
        tags.append(f"base_model:quantized:{card['base_model']}")
    return list(dict.fromkeys(tags))


def _entry(repo: Any) -> dict[str, Any]:
    """Everything the hub says about a repository, but its files."""
    return {
        "_id": repo.sha[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": repo.sha,
        "lastModified": repo.last_modified,
        "createdAt": repo.last_modified,
        "private": False,
        "disabled": False,
        "gated": repo.gated,
        "downloads": repo.downloads,
        "likes": repo.likes,
        "tags": _tags(repo),
        "pipeline_tag": repo.pipeline_tag,
        "library_name": repo.library_name,
        "cardData": _card_data(repo),
    }


def _sibling(repo: Any, path: str, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    size = repo.size(path)
    entry: dict[str, Any] = {"rfilename": path, "size": size, "blobId": repo.sha256(path)[:40]}
    if repo.is_lfs(path):
        entry["lfs"] = {"size": size, "sha256": repo.sha256(path), "pointerSize": 134}
    return entry
