import pytest
import torch

from compress.quant.rtn import dequantize, fake_quantize, quantize
from compress.quant.storage import group_size_for


def test_group_size_rule():
    assert group_size_for(576) == 64
    assert group_size_for(1536) == 128
    assert group_size_for(96) == 32
    assert group_size_for(50) == 50


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_error_is_at_most_half_a_step(bits, sym):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(bits))
    q, scale, zero = quantize(w, bits, 32, sym)
    assert q.max() <= 2**bits - 1 and q.dtype == torch.uint8
    err = (dequantize(q, scale, zero, 32) - w).abs().reshape(16, 4, 32)
    assert (err <= scale.unsqueeze(-1) / 2 + 1e-6).all()
    assert len(torch.unique(q)) <= 2**bits


def test_more_bits_is_closer():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    errors = [(fake_quantize(w, b, 64) - w).pow(2).mean() for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True)


def test_bad_group_size():
    with pytest.raises(ValueError, match="does not divide"):
        quantize(torch.zeros(2, 10), 4, 4)
