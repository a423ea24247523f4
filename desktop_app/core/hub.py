"""The model hub catalogue: search Hugging Face (or a mirror) for GGUF models and see what a repository offers.

    hub = Hub(hub_endpoint(settings.get("hub.endpoint")))
    for repo in hub.search("smollm2"):
        ...
    details = hub.details("bartowski/SmolLM2-135M-Instruct-GGUF")
    header = hub.read_header(details.models[0])      # the GGUF header, by an HTTP Range request
    verdict = fit_verdict(details.models[0], header, available_ram=available_memory())

Everything goes through ``huggingface_hub``, imported only when a call needs it. The endpoint
is always passed explicitly: ``huggingface_hub`` reads ``HF_ENDPOINT`` once, at its import,
while Parley reads it (through :func:`hub_endpoint`) at every call. The token comes from the
system keyring (:mod:`desktop_app.core.hub_tokens`), else from ``HF_TOKEN``, and is sent only
to the endpoint it was saved for. Every call does network I/O: run it on a worker thread.
Failures are :mod:`desktop_app.core.hub_errors` errors whose messages say what to do.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

from desktop_app.core.hub_errors import (
    HubError,
    HubGatedError,
    HubRepoNotFoundError,
    HubTokenError,
    HubUnreachableError,
)
from desktop_app.core.hub_files import HubFile, HubModelFile
from desktop_app.core.hub_models import group_gguf_files
from desktop_app.core.hub_tokens import forget_hub_token, hub_token, save_hub_token
from desktop_app.core.models import GGUFHeader, GGUFHeaderIncompleteError, read_gguf_header

__all__ = [
    "DEFAULT_ENDPOINT",
    "Hub",
    "HubError",
    "HubGatedError",
    "HubRepoNotFoundError",
    "HubTokenError",
    "HubUnreachableError",
    "RepoDetails",
    "RepoSummary",
    "forget_hub_token",
    "hub_endpoint",
    "hub_error",
    "hub_token",
    "save_hub_token",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds to wait for the hub to answer one request (huggingface_hub itself waits forever).
TIMEOUT = 30.0
#: The most of a README read for its summary.
_CARD_BYTES = 256 * 1024
_LOGIN = "add your token with `parley models login`"
_WHERE_TO_SET = "set the hub.endpoint setting (in settings.toml) or the HF_ENDPOINT environment variable"

T = TypeVar("T")


def hub_endpoint(setting_value: str) -> str:
    """The hub's base URL: the ``hub.endpoint`` setting, else ``HF_ENDPOINT`` (read now), else huggingface.co."""
    value = (setting_value or "").strip() or os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        source = "The hub.endpoint setting" if (setting_value or "").strip() else "HF_ENDPOINT"
        raise HubError(f"{source} must be an http:// or https:// address such as {DEFAULT_ENDPOINT}, "
                       f"not {value!r}.")
    return value.rstrip("/")


@dataclass(frozen=True)
class RepoSummary:
    """One repository in search results. ``gated`` is "auto", "manual" or False, as the hub says."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    updated: datetime | None = None
    gated: str | bool = False
    license: str | None = None
    tags: tuple[str, ...] = ()
    pipeline_tag: str | None = None


@dataclass(frozen=True)
class RepoDetails:
    """What a repository offers at one revision.

    ``models`` are its complete GGUF models, smallest first (their files carry the revision's
    commit, sizes and LFS SHA-256); ``incomplete`` the split ones with parts missing (not to be
    offered; see :class:`~desktop_app.core.hub_models.GroupedFiles`); ``projectors`` the
    ``mmproj`` files; ``files`` every file of the repository. ``gate_message`` says what the
    user must accept, and where, when ``gated`` is not False.
    """

    repo_id: str
    revision: str
    url: str
    license: str | None
    license_url: str | None
    gated: str | bool
    gate_message: str | None
    base_model: str | None
    base_models: tuple[str, ...]
    summary: str
    models: tuple[HubModelFile, ...]
    incomplete: tuple[HubModelFile, ...] = ()
    projectors: tuple[HubFile, ...] = ()
    files: tuple[HubFile, ...] = ()
    tags: tuple[str, ...] = ()
    downloads: int = 0
    likes: int = 0
    updated: datetime | None = None
    card_data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Hub:
    """The catalogue of one hub endpoint (huggingface.co or a mirror).

    ``token``: the access token to send; None looks it up (on first use) in the system
    keyring for this endpoint, then in ``HF_TOKEN``. Cheap to create: nothing is contacted
    until a method is called.
    """

    def __init__(self, endpoint: str, token: str | None = None):
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._token_known = token is not None

    @classmethod
    def from_settings(cls, settings: Any, token: str | None = None) -> "Hub":
        """The hub the ``hub.endpoint`` setting (or ``HF_ENDPOINT``) names."""
        return cls(hub_endpoint(settings.get("hub.endpoint")), token)

    @property
    def token(self) -> str | None:
        """The token sent with each request (None: none)."""
        if not self._token_known:
            self._token = hub_token(self.endpoint) or os.environ.get("HF_TOKEN") or None
            self._token_known = True
        return self._token

    def repo_url(self, repo_id: str) -> str:
        """The repository's page on this hub (where a licence is accepted)."""
        return f"{self.endpoint}/{repo_id}"

    def file_url(self, file: HubFile) -> str:
        """The address of one file's bytes at its revision."""
        from huggingface_hub import hf_hub_url

        return hf_hub_url(file.repo_id, file.path, revision=file.revision, endpoint=self.endpoint)

    # -- the catalogue -------------------------------------------------------------------
    def search(self, query: str, limit: int = 30) -> list[RepoSummary]:
        """GGUF repositories whose name contains ``query``, most downloaded first (at most ``limit``)."""
        query = query.strip()
        if not query:
            raise HubError("Say what to search for, e.g. `parley models search qwen`.")
        return self.find_repos(query, ("gguf",), limit=limit)

    def find_repos(self, query: str | None, tags: Sequence[str], limit: int = 30) -> list[RepoSummary]:
        """Repositories having every tag in ``tags`` whose name contains ``query`` (None: any name),
        most downloaded first (at most ``limit``).

        Tags are the hub's: ``gguf``, ``peft``, ``lora``, ``base_model:adapter:owner/name``, ...
        """
        self._check_reachable()

        def call() -> list[RepoSummary]:
            found = self._api().list_models(
                search=(query or "").strip() or None, filter=list(tags) or None, sort="downloads",
                limit=max(1, int(limit)),
                expand=["downloads", "likes", "lastModified", "gated", "tags", "pipeline_tag"])
            return [_summary(info) for info in found]

        return self._call(call)

    def details(self, repo_id: str, revision: str | None = None) -> RepoDetails:
        """A repository's licence, gate, card summary and GGUF models (``revision``: a branch, tag or commit)."""
        repo_id = repo_id.strip().strip("/")
        info = self._call(lambda: self._api().model_info(repo_id, revision=revision, files_metadata=True,
                                                         timeout=TIMEOUT), repo_id=repo_id)
        sha = info.sha or revision or "main"
        files = tuple(_hub_file(repo_id, sibling, sha) for sibling in (info.siblings or []))
        grouped = group_gguf_files(files)
        card = _card_dict(info.card_data)
        license, license_url = _license(card, info.tags or [])
        base_models = _base_models(card, info.tags or [])
        gated = info.gated or False
        summary = ""
        if any(f.path == "README.md" for f in files):
            summary = self._card_summary(repo_id, sha)
        return RepoDetails(
            repo_id=info.id or repo_id, revision=sha, url=self.repo_url(repo_id), license=license,
            license_url=license_url, gated=gated, gate_message=self._gate_message(repo_id, gated, license, card),
            base_model=base_models[0] if base_models else None, base_models=base_models, summary=summary,
            models=grouped.models, incomplete=grouped.incomplete, projectors=grouped.projectors, files=files,
            tags=tuple(info.tags or ()), downloads=info.downloads or 0, likes=info.likes or 0,
            updated=info.last_modified, card_data=card)

    def read_header(self, model: HubModelFile | HubFile, *, first_bytes: int = 1 << 20,
                    max_bytes: int = 128 << 20) -> GGUFHeader:
        """The GGUF header of a model (its first part) on the hub, read without downloading the model.

        Fetches ``first_bytes`` with an HTTP Range request and, while the header goes on past
        what arrived, the next bytes, doubling each time, up to ``max_bytes``. A server that
        ignores the Range header is read only as far as needed, then the connection is closed.
        """
        from desktop_app.core.errors import ModelFileError

        file = model.first if isinstance(model, HubModelFile) else model
        url = self.file_url(file)
        limit = min(max_bytes, file.size) if file.size else max_bytes
        data = bytearray()
        want = min(first_bytes, limit)
        while True:
            data += self._call(lambda: self._read_range(url, len(data), want), repo_id=file.repo_id,
                               path=file.path)
            try:
                return read_gguf_header(bytes(data), file.size or None, name=file.path)
            except GGUFHeaderIncompleteError:
                if len(data) >= limit or len(data) < want:
                    what = "ends" if len(data) < want else f"is longer than {limit:,} bytes"
                    raise ModelFileError(f"The GGUF header of {file.path} in {file.repo_id} {what}; "
                                         "it may be damaged on the hub.") from None
                want = min(want * 2, limit)

    def read_range(self, file: HubFile, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of a file on the hub, by an HTTP Range request.

        For small looks into a file without downloading it (a header, a config). Fewer bytes
        come back when the file ends first.
        """
        url = self.file_url(file)
        return self._call(lambda: self._read_range(url, start, end), repo_id=file.repo_id, path=file.path)

    def whoami(self) -> str | None:
        """The account name the token belongs to; None when this hub does not say (a mirror).

        Raises :class:`HubTokenError` when the hub refuses the token.
        """
        from huggingface_hub.errors import HfHubHTTPError

        if not self.token:
            raise HubTokenError(f"There is no token for {self.endpoint}; {_LOGIN}.")
        try:
            answer = self._call(lambda: self._api().whoami(token=self.token))
        except HubRepoNotFoundError:
            return None
        except HubError as exc:
            cause = exc.__cause__
            if isinstance(cause, HfHubHTTPError) and cause.response is not None \
                    and cause.response.status_code in (404, 405, 501):
                return None
            raise
        return str(answer.get("name") or "") or None

    # -- inside --------------------------------------------------------------------------
    def _api(self):
        from huggingface_hub import HfApi

        from desktop_app import __version__

        # token=False, not None: without a token of ours, huggingface_hub would send whatever
        # token it finds on the machine, to whatever endpoint this is.
        return HfApi(endpoint=self.endpoint, token=self.token or False, library_name="parley",
                     library_version=__version__)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        from desktop_app import __version__

        headers = build_hf_headers(token=self.token or False, library_name="parley", library_version=__version__)
        return {**headers, **(extra or {})}

    def _call(self, call: Callable[[], T], *, repo_id: str | None = None, path: str | None = None) -> T:
        try:
            return call()
        except HubError:
            raise
        except Exception as exc:
            translated = hub_error(exc, self.endpoint, repo_id=repo_id, path=path, token_sent=bool(self.token))
            if translated is None:
                raise
            raise translated from exc

    def _check_reachable(self) -> None:
        """Fail at once when nothing listens at the endpoint.

        ``list_models`` retries a refused connection for about 20 s before it gives up; a
        person searching deserves the answer now. Behind a proxy the proxy decides, so then
        nothing is checked here.
        """
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError as exc:
            raise HubUnreachableError(_unreachable(self.endpoint, exc)) from None

    def _read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of ``url``, reading no further than that."""
        from huggingface_hub.utils import get_session, hf_raise_for_status

        wanted = end - start
        with get_session().stream("GET", url, headers=self._headers({"Range": f"bytes={start}-{end - 1}"}),
                                  timeout=TIMEOUT) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            skip = start if response.status_code == 200 else 0  # the server sent the file from its start
            out = bytearray()
            for chunk in response.iter_bytes():
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                out += chunk
                if len(out) >= wanted:
                    break
            return bytes(out[:wanted])

    def _card_summary(self, repo_id: str, revision: str) -> str:
        """The summary of the repository's README, or "" when it cannot be read."""
        from huggingface_hub import hf_hub_url

        from desktop_app.core.model_card import card_summary

        # Read through huggingface_hub's session rather than hf_hub_download: a catalogue
        # look should not fill the user's huggingface cache.
        url = hf_hub_url(repo_id, "README.md", revision=revision, endpoint=self.endpoint)
        try:
            text = self._call(lambda: self._read_range(url, 0, _CARD_BYTES), repo_id=repo_id, path="README.md")
        except HubError as exc:
            log.info("no model card summary for %s: %s", repo_id, exc)
            return ""
        return card_summary(text.decode("utf-8", "replace"))

    def _gate_message(self, repo_id: str, gated: str | bool, license: str | None, card: dict) -> str | None:
        if not gated:
            return None
        url = self.repo_url(repo_id)
        what = f"its licence ({license})" if license else "its terms"
        how = ("access is granted as soon as you accept" if gated == "auto"
               else "its authors review each request, so access may take a while")
        prompt = card.get("extra_gated_prompt")
        prompt = f" The authors ask: {' '.join(str(prompt).split())[:300]}" if prompt else ""
        token = ("Your saved token is used; it must belong to the account that accepted."
                 if self.token else f"Then {_LOGIN}.")
        return f"{repo_id} is gated: accept {what} at {url} ({how}). {token}{prompt}"


def hub_error(exc: BaseException, endpoint: str, *, repo_id: str | None = None, path: str | None = None,
              token_sent: bool = False) -> HubError | None:
    """The :class:`HubError` a person should see for what ``huggingface_hub`` (or its HTTP client) raised.

    None when ``exc`` is not a hub or network failure (a bug, which should surface as it is).
    ``token_sent`` tells a refused token from a missing one.
    """
    from huggingface_hub import errors

    where = f"{repo_id}" if repo_id else endpoint
    page = f"{endpoint}/{repo_id}" if repo_id else endpoint
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubUnreachableError(f"The model hub is not contacted because HF_HUB_OFFLINE is set; unset it to "
                                   f"search or download ({endpoint}).")
    if isinstance(exc, errors.GatedRepoError):
        if token_sent:
            return HubTokenError(f"The hub refused your token for {where}: accept the licence at {page} with the "
                                 f"account the token belongs to, or {_LOGIN} to use another one.")
        return HubGatedError(f"{where} is gated: accept the licence at {page}, then {_LOGIN}.")
    if isinstance(exc, errors.RepositoryNotFoundError):
        status = exc.response.status_code if exc.response is not None else None
        if token_sent and status == 401:
            return HubTokenError(f"The hub at {endpoint} refused your token (for {where}); it may be wrong or "
                                 f"expired: {_LOGIN} to save a new one.")
        hint = "" if token_sent else f" If it is private, {_LOGIN}."
        if not repo_id:
            return HubRepoNotFoundError(f"The hub at {endpoint} did not find what was asked for.{hint}")
        return HubRepoNotFoundError(f"There is no repository {repo_id} on {endpoint}; check the name "
                                    f"(owner/name, as `parley models search` shows it).{hint}")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubRepoNotFoundError(f"{where} has no such revision on {endpoint}.")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return HubRepoNotFoundError(f"{where} has no file {path or ''} on {endpoint}; it may have been renamed "
                                    "or removed: look at the repository's files again.")
    if isinstance(exc, errors.HFValidationError):
        return HubRepoNotFoundError(f"{repo_id!r} is not a repository name; they look like owner/name.")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            if token_sent:
                return HubTokenError(f"The hub at {endpoint} refused your token for {where} ({status}); "
                                     f"{_LOGIN} to save a new one.")
            return HubGatedError(f"{where} on {endpoint} needs an access token: {_LOGIN}.")
        if status == 429:
            return HubError(f"The hub at {endpoint} asks to slow down (too many requests); try again in a minute.")
        return HubError(f"The hub at {endpoint} answered with an error ({status}); try again later. "
                        f"If it keeps failing and this is a mirror, {_WHERE_TO_SET} to another address.")
    if isinstance(exc, _transport_errors()):
        return HubUnreachableError(_unreachable(endpoint, exc))
    if isinstance(exc, ValueError) and type(exc).__name__ == "JSONDecodeError":
        return HubError(f"{endpoint} did not answer like a model hub (its reply is not the hub's JSON). "
                        f"Is it a Hugging Face mirror? To use another, {_WHERE_TO_SET}.")
    return None


def _unreachable(endpoint: str, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    return (f"The model hub at {endpoint} cannot be reached ({reason}). Check the network connection; to use a "
            f"mirror, {_WHERE_TO_SET}.")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network errors (huggingface_hub has used httpx2, httpx and requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for name, attribute in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                            ("requests", "ConnectionError")):
        try:
            found.append(getattr(importlib.import_module(name), attribute))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _hub_file(repo_id: str, sibling: Any, revision: str) -> HubFile:
    lfs = sibling.lfs
    size = lfs.size if lfs is not None else (sibling.size or 0)
    return HubFile(repo_id=repo_id, path=sibling.rfilename, size=int(size or 0),
                   sha256=lfs.sha256 if lfs is not None else None, revision=revision)


def _card_dict(card_data: Any) -> dict[str, Any]:
    if card_data is None:
        return {}
    try:
        return dict(card_data.to_dict())
    except AttributeError:
        return dict(card_data) if isinstance(card_data, dict) else {}


def _license(card: dict[str, Any], tags: list[str]) -> tuple[str | None, str | None]:
    """The licence's name and link: the card's ``license`` (or its ``license_name`` for "other"), else the tag."""
    license = card.get("license")
    if isinstance(license, list):
        license = license[0] if license else None
    if not license:
        license = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    if license == "other" and card.get("license_name"):
        license = f"other ({card['license_name']})"
    link = card.get("license_link")
    return (str(license) if license else None), (str(link) if link else None)


def _base_models(card: dict[str, Any], tags: list[str]) -> tuple[str, ...]:
    base = card.get("base_model")
    if isinstance(base, str):
        return (base,)
    if isinstance(base, list):
        return tuple(str(b) for b in base)
    # The hub tags a derived model "base_model:quantized:owner/name" (or "base_model:owner/name").
    found = [t.split(":")[-1] for t in tags if t.startswith("base_model:")]
    return tuple(dict.fromkeys(found))


def _summary(info: Any) -> RepoSummary:
    tags = tuple(info.tags or ())
    license = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    return RepoSummary(repo_id=info.id, downloads=info.downloads or 0, likes=info.likes or 0,
                       updated=info.last_modified, gated=info.gated or False, license=license, tags=tags,
                       pipeline_tag=info.pipeline_tag)
