import numpy as np
import pytest
import torch

from compress.scorers.powerlaw import alpha_hat, eigenvalues, fit_powerlaw, spectral_metrics


def test_reference_eigenvalues_one_to_ten():
    # shared/reference/algorithms.md §1.7: WWFit on 1..10 -> xmin 6, α 4.68155, D 0.25324, σ 1.64644
    fit = fit_powerlaw(torch.arange(1.0, 11.0))
    assert fit.xmin.item() == 6.0
    assert fit.alpha.item() == pytest.approx(4.68155, abs=1e-5)
    assert fit.D.item() == pytest.approx(0.25324, abs=1e-5)
    assert fit.sigma.item() == pytest.approx(1.64644, abs=1e-5)
    assert fit.n_tail.item() == 5
    median = fit_powerlaw(torch.arange(1.0, 11.0), "median")  # TempBalance rule: xmin at index N // 2
    assert median.xmin.item() == 6.0
    assert median.alpha.item() == pytest.approx(4.68155, abs=1e-5)


def pareto_sample(n=20_000, pdf_exponent=2.5, seed=0):
    # algorithms.md §1.7: numpy default_rng(0), x = (1 - U)^(-1/1.5) has density ∝ x^-2.5
    u = np.random.default_rng(seed).random(n)
    return torch.tensor(np.sort((1 - u) ** (-1 / (pdf_exponent - 1))))


def test_pareto_draws_recover_exponent():
    x = pareto_sample()
    ks = fit_powerlaw(x)
    assert abs(ks.alpha.item() - 2.5) < 0.05
    assert ks.alpha.item() == pytest.approx(2.511, abs=1e-3)  # the reference's WWFit value
    assert ks.xmin.item() == pytest.approx(1.285, abs=1e-3)
    median = fit_powerlaw(x, "median")
    assert median.alpha.item() == pytest.approx(2.506, abs=1e-3)


def test_alpha_is_scale_invariant_and_batched_equals_single():
    rng = np.random.default_rng(1)
    a = torch.tensor(np.sort(rng.pareto(2.0, 300) + 1))
    b = torch.tensor(np.sort(rng.pareto(4.0, 300) + 1))
    batch = fit_powerlaw(torch.stack([a, b * 1000]))
    assert batch.alpha[0].item() == pytest.approx(fit_powerlaw(a).alpha.item(), rel=1e-9)
    assert batch.alpha[1].item() == pytest.approx(fit_powerlaw(b).alpha.item(), rel=1e-6)
    assert batch.alpha[0] < batch.alpha[1]  # heavier tail -> smaller α


def test_float32_grid_matches_float64():
    rng = np.random.default_rng(2)
    evals = torch.tensor(np.sort(rng.pareto(2.5, (8, 400)) + 1, axis=-1))
    fast = fit_powerlaw(evals, grid_dtype=torch.float32)
    exact = fit_powerlaw(evals, grid_dtype=torch.float64)
    assert torch.allclose(fast.alpha, exact.alpha, atol=1e-3)


def test_tiny_eigenvalues_are_not_candidates():
    # WeightWatcher drops eigenvalues <= 1e-5 before fitting; zeros must not become xmin.
    evals = torch.cat([torch.zeros(5), torch.arange(1.0, 11.0)])
    fit = fit_powerlaw(evals)
    assert fit.xmin.item() == 6.0
    assert fit.alpha.item() == pytest.approx(4.68155, abs=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="xmin rule"):
        fit_powerlaw(torch.arange(1.0, 5.0), "peak")
    with pytest.raises(ValueError, match="at least 2"):
        fit_powerlaw(torch.tensor([1.0]))


def test_eigenvalues_are_squared_singular_values():
    torch.manual_seed(0)
    tall, wide = torch.randn(3, 50, 20), torch.randn(3, 20, 50)
    for w in (tall, wide):
        expected = torch.linalg.svdvals(w.double()).pow(2).flip(-1)
        assert torch.allclose(eigenvalues(list(w), torch.float64), expected, rtol=1e-8)
        assert eigenvalues(list(w)).shape == (3, 20)


def test_spectral_metrics():
    evals = torch.tensor([[1.0, 2.0, 4.0]])
    m = spectral_metrics(evals)
    assert m["spectral_norm"].item() == 4.0
    assert m["stable_rank"].item() == pytest.approx(7 / 4)
    assert alpha_hat(torch.tensor([2.0]), evals).item() == pytest.approx(2 * np.log10(4))
