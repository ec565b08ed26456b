import math

import pytest
import torch

from compress.errors import CompressError
from compress.evaluation.perplexity import perplexity, resolve_seq_len
from conftest import tiny_model


def manual_ppl(model, ids, seq_len, windows):
    total_nll, count = 0.0, 0
    for w in range(windows):
        chunk = ids[w * seq_len : (w + 1) * seq_len].unsqueeze(0)
        logits = model(chunk).logits[0, :-1]
        logp = torch.log_softmax(logits.double(), -1)
        total_nll -= logp.gather(-1, chunk[0, 1:, None]).sum().item()
        count += seq_len - 1
    return math.exp(total_nll / count)


def test_matches_a_direct_computation_and_drops_the_tail():
    model = tiny_model("llama")
    ids = torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(0))
    result = perplexity(model, ids, seq_len=32, progress=False)
    assert (result.windows, result.windows_total, result.tokens_scored) == (3, 3, 3 * 31)
    assert result.ppl == pytest.approx(manual_ppl(model, ids, 32, 3), rel=1e-4)
    # batching windows together gives the same number
    assert perplexity(model, ids, seq_len=32, batch_size=2, progress=False).ppl == pytest.approx(result.ppl, rel=1e-5)


def test_max_windows_scores_a_prefix():
    model = tiny_model("llama")
    ids = torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(0))
    head = perplexity(model, ids, seq_len=32, max_windows=1, progress=False)
    assert (head.windows, head.windows_total) == (1, 3)
    assert head.ppl == pytest.approx(manual_ppl(model, ids, 32, 1), rel=1e-4)
    assert "first 1 of 3 windows" in head.summary()


def test_seq_len_is_capped_at_the_context_length():
    model = tiny_model("llama")  # max_position_embeddings = 128
    assert resolve_seq_len(model, None) == 128
    assert resolve_seq_len(model, 64) == 64
    with pytest.raises(CompressError):
        resolve_seq_len(model, 1)


def test_too_short_text():
    with pytest.raises(CompressError, match="fewer than one window"):
        perplexity(tiny_model("llama"), torch.arange(10), seq_len=32, progress=False)
