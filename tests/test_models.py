"""Conditional 1D UNet: shapes, parameter count of the published config, fast conv path."""

from __future__ import annotations

import torch

from diffpolicy.models.unet1d import ConditionalUnet1D, Conv1d

# One intra-op thread for the whole session, set before any parallel region runs: on a 2-core
# machine switching 2 -> 1 threads later leaves OpenMP workers spinning (tests 5-10x slower).
torch.set_num_threads(1)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_published_pusht_lowdim_param_count():
    """Push-T low-dim: action 2, global cond To*obs = 2*20, down_dims (256, 512, 1024), kernel 5,
    step embedding 256: the reference counts ~65.8M parameters."""
    with torch.device("meta"):
        m = ConditionalUnet1D(
            2, 40, (256, 512, 1024), kernel_size=5, n_groups=8, step_embed_dim=256
        )
    assert abs(n_params(m) - 65.8e6) / 65.8e6 < 0.02
    assert n_params(m) == 65_783_298


def test_shapes_and_conditioning():
    m = ConditionalUnet1D(3, 7, (16, 32, 64), kernel_size=5, n_groups=8, step_embed_dim=32)
    x, g = torch.randn(4, 16, 3), torch.randn(4, 7)
    t = torch.tensor([0, 5, 50, 99])
    y = m(x, t, g)
    assert y.shape == (4, 16, 3) and y.dtype == torch.float32
    assert not torch.allclose(m(x, t, g), m(x, t, torch.randn(4, 7)))
    assert not torch.allclose(m(x, t, g), m(x, t + 1, g))
    assert m(x, 0, g).shape == (4, 16, 3)
    head = ConditionalUnet1D(3, 7, (16, 32), step_embed_dim=32, output_dim=20)
    assert head(torch.randn(2, 8, 3), 0, torch.randn(2, 7)).shape == (2, 8, 20)


def test_fast_conv_path_matches_conv1d():
    conv = Conv1d(128, 64, 5, padding=2)
    x = torch.randn(1, 128, 8)  # small input: im2col path
    ref = torch.nn.functional.conv1d(x, conv.weight, conv.bias, padding=2)
    torch.testing.assert_close(conv(x), ref, atol=1e-4, rtol=1e-4)
    x = torch.randn(2, 128, 8, requires_grad=True)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_film_table_and_traced_body_match_forward():
    """Precomputed FiLM tables (and a frozen trace of the body) give the plain forward pass."""
    torch.manual_seed(0)
    m = ConditionalUnet1D(2, 10, (16, 32, 64), kernel_size=5, n_groups=8, step_embed_dim=32)
    m.eval()
    ts, g = torch.tensor([90, 40, 0]), torch.randn(3, 10)
    x = torch.randn(3, 16, 2)
    with torch.no_grad():
        film = m.film_table(ts, g)  # (S, B, F, 1)
        assert film.shape == (3, 3, sum(m.film_sizes), 1)
        for i, t in enumerate(ts):
            ref = m(x, t, g)
            torch.testing.assert_close(m.forward_film(x, film[i]), ref, atol=1e-5, rtol=1e-5)
        traced = torch.jit.trace(FilmBody(m).eval(), (x, film[0]), check_trace=False)
        traced = torch.jit.freeze(traced)
        torch.testing.assert_close(traced(x, film[1]), m(x, ts[1], g), atol=1e-5, rtol=1e-5)
        nocond = ConditionalUnet1D(2, 0, (16, 32), step_embed_dim=32).eval()
        torch.testing.assert_close(
            nocond.forward_film(x, nocond.film_table(ts)[2]), nocond(x, 0), atol=1e-5, rtol=1e-5
        )


class FilmBody(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x, film):
        return self.m.forward_film(x, film)
