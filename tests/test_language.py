"""Instruction embeddings (diffpolicy.language): lazy import of the encoder, one encoding per
unique text, a clear error for a missing model (fast tier: fake encoder)."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from diffpolicy import language
from diffpolicy.errors import UserError


def test_sentence_transformers_imported_only_for_language(toy_demo_file):
    code = (
        "import sys\n"
        "import diffpolicy, diffpolicy.cli, diffpolicy.train, diffpolicy.evaluate\n"
        "import diffpolicy.language, diffpolicy.policies, diffpolicy.report\n"
        "from diffpolicy.cli import main\n"
        f"assert main(['info', {toy_demo_file!r}]) == 0\n"
        "bad = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_embed_encodes_each_unique_text_once(fake_encoder):
    texts = ["go left", "go right", "go left", "go left"]
    e = language.embed(texts, fake_encoder.path)
    assert e.shape == (4, 16) and e.dtype == np.float32
    assert sorted(fake_encoder.encoded) == ["go left", "go right"]
    np.testing.assert_array_equal(e[0], e[2])
    language.embed(["go right", "go left"], fake_encoder.path)
    assert len(fake_encoder.encoded) == 2  # cached: the encoder is not run again
    u = language.unique_embeddings(texts, fake_encoder.path)
    assert u.shape == (2, 16)


def test_missing_language_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a local directory"):
        language.embed(["go left"], str(tmp_path / "nope"))
