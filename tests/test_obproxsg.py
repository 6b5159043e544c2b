"""OBProxSG / ProxSG against independent references: scikit-learn's Lasso and brute-force prox."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.linear_model import Lasso

from optimizers import OBProxSG, ProxSG


def _lasso_problem(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p))
    truth = np.zeros(p)
    truth[:5] = [2.0, -1.5, 1.0, -0.8, 0.6]
    b = A @ truth + 0.3 * rng.standard_normal(n)
    return A, b


def _sklearn_optimum(design: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    # sklearn's Lasso minimises 1/(2n)||b - Ax||^2 + alpha*||x||_1, the same objective.
    model = Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=200_000)
    return model.fit(design, b).coef_


def _train(opt_factory, design: np.ndarray, b: np.ndarray, epochs: int, batch: int, seed: int) -> np.ndarray:
    At, bt = torch.from_numpy(design), torch.from_numpy(b)
    x = torch.nn.Parameter(torch.zeros(design.shape[1], dtype=torch.float64))
    opt = opt_factory([x])
    gen = torch.Generator().manual_seed(seed)
    n = design.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen) if batch < n else torch.arange(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = 0.5 * ((At[idx] @ x - bt[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    return x.detach().numpy()


def test_full_batch_reaches_lasso_optimum_and_zero_pattern() -> None:
    A, b = _lasso_problem(80, 20, seed=1)
    lam = 0.1
    reference = _sklearn_optimum(A, b, lam)
    lipschitz = np.linalg.eigvalsh(A.T @ A / A.shape[0]).max()
    x = _train(
        lambda params: OBProxSG(params, lr=1.0 / lipschitz, lambda_=lam, epochSize=1, Np=300),
        A,
        b,
        epochs=1500,
        batch=A.shape[0],
        seed=0,
    )
    assert 5 <= int((reference == 0).sum()) < 20, "test problem should have a nontrivial zero pattern"
    np.testing.assert_array_equal(x == 0, reference == 0)
    np.testing.assert_allclose(x, reference, atol=1e-8)


def test_stochastic_obproxsg_finds_zero_pattern_and_beats_proxsg_sparsity() -> None:
    A, b = _lasso_problem(200, 50, seed=0)
    lam = 0.1
    reference = _sklearn_optimum(A, b, lam)
    for seed in (0, 1):
        prox = _train(lambda ps: ProxSG(ps, lr=0.02, lambda_=lam), A, b, epochs=40, batch=4, seed=seed)
        ob = _train(
            lambda ps: OBProxSG(ps, lr=0.02, lambda_=lam, epochSize=50, Np=10),
            A,
            b,
            epochs=40,
            batch=4,
            seed=seed,
        )
        np.testing.assert_array_equal(ob == 0, reference == 0)
        assert np.abs(ob - reference).max() < 0.05
        assert int((prox == 0).sum()) < int((ob == 0).sum())


def test_orthant_steps_never_revive_zeros_nor_cross_signs() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.nn.Parameter(torch.randn(400, generator=gen))
    with torch.no_grad():
        x[torch.rand(400, generator=gen) < 0.3] = 0.0
    opt = OBProxSG([x], lr=0.5, lambda_=0.05, epochSize=10, Np=0, eps=1e-3)
    for _ in range(30):
        before = x.detach().clone()
        x.grad = 3.0 * torch.randn(400, generator=gen)
        assert opt.phase == "orthant"
        opt.step()
        after = x.detach()
        assert torch.all(after[before == 0] == 0), "a zero entry became nonzero"
        assert torch.all(after * before >= 0), "an entry crossed zero"
        assert torch.all((after == 0) | (after.abs() > 1e-3)), "entries within eps must be trimmed"
    assert 0 < int((x == 0).sum()) < 400


def test_proximal_step_is_the_l1_proximal_operator() -> None:
    lr, lam = 0.3, 0.7
    values = torch.tensor([-2.0, -0.25, -0.05, 0.0, 0.1, 0.15, 0.9, 3.0], dtype=torch.float64)
    grads = torch.tensor([0.5, -0.4, 0.3, 0.2, -0.1, 0.9, -1.0, 2.0], dtype=torch.float64)
    x = torch.nn.Parameter(values.clone())
    x.grad = grads.clone()
    ProxSG([x], lr=lr, lambda_=lam).step()
    for v, g, got in zip(values.tolist(), grads.tolist(), x.detach().tolist(), strict=True):
        y = v - lr * g
        best = minimize_scalar(
            lambda z, y=y: (z - y) ** 2 / (2 * lr) + lam * abs(z),
            bounds=(-10.0, 10.0),
            method="bounded",
            options={"xatol": 1e-10},
        ).x
        assert got == pytest.approx(best, abs=1e-6)
        if abs(y) <= lr * lam:
            assert got == 0.0


def test_phase_schedule_follows_epochs() -> None:
    x = torch.nn.Parameter(torch.zeros(3))
    opt = OBProxSG([x], lr=0.1, lambda_=0.1, epochSize=3, Np=2, No=1)
    phases = []
    for _ in range(12):
        phases.append(opt.phase)
        x.grad = torch.ones(3)
        opt.step()
    assert phases == ["proximal"] * 6 + ["orthant"] * 3 + ["proximal"] * 3
    assert opt.epoch == 4
    forever = OBProxSG([x], lr=0.1, lambda_=0.1, epochSize=2, Np=1)
    seen = []
    for _ in range(8):
        seen.append(forever.phase)
        x.grad = torch.ones(3)
        forever.step()
    assert seen == ["proximal"] * 2 + ["orthant"] * 6


def test_proximal_phase_can_revive_zero_but_orthant_phase_cannot() -> None:
    x = torch.nn.Parameter(torch.zeros(2))
    opt = OBProxSG([x], lr=1.0, lambda_=0.1, epochSize=1, Np=1)
    x.grad = torch.tensor([-1.0, 0.05])
    opt.step()
    assert x[0].item() == pytest.approx(0.9) and x[1].item() == 0.0
    x.grad = torch.tensor([0.0, -5.0])
    opt.step()
    assert x[1].item() == 0.0


def test_state_dict_round_trip_restores_counters_and_continues_identically() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(6) for _ in range(14)]
    a = torch.nn.Parameter(torch.randn(6))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = OBProxSG([a], lr=0.2, lambda_=0.3, epochSize=3, Np=2, No=1, eps=1e-4)
    for g in grads[:7]:
        a.grad = g.clone()
        opt_a.step()
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    with torch.no_grad():
        b.copy_(a)
    opt_b = OBProxSG([b], lr=0.2, lambda_=0.3, epochSize=3, Np=2, No=1, eps=1e-4)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    assert (opt_b.step_count, opt_b.epoch, opt_b.phase) == (7, 2, "orthant")
    for g in grads[7:]:
        assert opt_a.phase == opt_b.phase
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    mismatched = OBProxSG([b], lr=0.2, lambda_=0.3, epochSize=4, Np=2, No=1)
    with pytest.raises(ValueError, match="epochSize"):
        mismatched.load_state_dict(opt_a.state_dict())


def test_parameter_groups_use_their_own_hyperparameters() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = OBProxSG(
        [{"params": [w]}, {"params": [bias], "lambda_": 0.0, "lr": 0.5}],
        lr=0.1,
        lambda_=2.0,
        epochSize=5,
        Np=1,
    )
    w.grad = torch.zeros(2)
    bias.grad = torch.ones(2)
    opt.step()
    assert torch.allclose(w, torch.tensor([0.8, -0.8]))
    assert torch.allclose(bias, torch.tensor([0.5, -1.5]))
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "lr": -1.0})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lambda_": 0.0}, "lambda_"),
        ({"lambda_": -1.0}, "lambda_"),
        ({"epochSize": 0}, "epochSize"),
        ({"epochSize": -5}, "epochSize"),
        ({"epochSize": 2.5}, "epochSize"),
        ({"Np": -1}, "Np"),
        ({"No": "forever"}, "No"),
        ({"eps": -1e-4}, "eps"),
    ],
)
def test_bad_hyperparameters_raise_naming_them(kwargs: dict, name: str) -> None:
    args = {"lr": 0.1, "lambda_": 1e-4, "epochSize": 10, "Np": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        OBProxSG([torch.nn.Parameter(torch.ones(2))], **args)


def test_proxsg_rejects_bad_lr_and_lambda() -> None:
    with pytest.raises(ValueError, match="lambda_"):
        ProxSG([torch.nn.Parameter(torch.ones(2))], lr=0.1, lambda_=0.0)
    with pytest.raises(ValueError, match="lr"):
        ProxSG([torch.nn.Parameter(torch.ones(2))], lr=float("nan"), lambda_=0.1)
