import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ufm.losses import LOSSES, get_loss, mixup_target


def _batch(n=64, K=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, K, generator=g, dtype=torch.float64)
    c = torch.randint(K, (n,), generator=g)
    cp = torch.randint(K, (n,), generator=g)
    cp[:8] = c[:8]  # some same-class pairs
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    lam[:3] = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    return z, c, cp, lam


def test_mixup_target_rows():
    _, c, cp, lam = _batch()
    y = mixup_target(c, cp, lam, 7)
    assert torch.allclose(y.sum(-1), torch.ones(len(c), dtype=torch.float64), atol=1e-15)
    i = 10
    assert y[i, c[i]] >= lam[i] - 1e-15 and y[i, cp[i]] >= 1 - lam[i] - 1e-15


def test_cross_entropy_soft_equals_pair_form():
    z, c, cp, lam = _batch()
    soft = get_loss("ce")(z, c, cp, lam)
    pair = get_loss("ce", form="pair")(z, c, cp, lam)
    assert torch.allclose(soft, pair, rtol=1e-13, atol=1e-13)


def test_cross_entropy_matches_torch_soft_target_cross_entropy():
    z, c, cp, lam = _batch()
    y = mixup_target(c, cp, lam, z.shape[1])
    reference = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(get_loss("ce")(z, c, cp, lam), reference, rtol=1e-13, atol=1e-13)


def test_squared_error_pair_minus_soft_is_the_stated_constant():
    z, c, cp, lam = _batch()
    soft = get_loss("mse")(z, c, cp, lam)
    pair = get_loss("mse", form="pair")(z, c, cp, lam)
    e = torch.eye(z.shape[1], dtype=torch.float64)
    constant = 0.5 * lam * (1 - lam) * ((e[c] - e[cp]) ** 2).sum(-1)
    assert torch.allclose(pair - soft, constant, atol=1e-12)
    y = mixup_target(c, cp, lam, z.shape[1])
    assert torch.allclose(soft, 0.5 * ((z - y) ** 2).sum(-1), rtol=1e-14)


def test_label_smoothing_matches_torch():
    z, c, cp, lam = _batch()
    y = mixup_target(c, cp, lam, z.shape[1])
    reference = F.cross_entropy(z, y, reduction="none", label_smoothing=0.2)
    ours = get_loss("label_smoothing", eps=0.2)(z, c, cp, lam)
    assert torch.allclose(ours, reference, rtol=1e-13, atol=1e-13)


def test_focal_pair_form_against_naive_numpy():
    z, c, cp, lam = _batch(n=20)
    gamma = 1.5
    ours = get_loss("focal", gamma=gamma)(z, c, cp, lam).numpy()
    zn = z.numpy()
    for i in range(len(zn)):
        p = np.exp(zn[i] - zn[i].max())
        p /= p.sum()

        def fl(k):
            return -((1 - p[k]) ** gamma) * np.log(p[k])

        expected = lam[i].item() * fl(c[i]) + (1 - lam[i].item()) * fl(cp[i])
        assert ours[i] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    ce_pair = get_loss("ce", form="pair")(z, c, cp, lam)
    assert torch.allclose(get_loss("focal", gamma=0.0)(z, c, cp, lam), ce_pair, rtol=1e-13)


@pytest.mark.parametrize(
    "name,params",
    [("ce", {}), ("ce", {"form": "pair"}), ("mse", {}), ("mse", {"form": "pair"}),
     ("label_smoothing", {"eps": 0.1}), ("focal", {"gamma": 2.0}),
     ("logit_adjusted", {"tau": 1.5, "priors": [0.4, 0.3, 0.15, 0.1, 0.05]})],
)
def test_gradient_and_hvp_match_finite_differences(name, params):
    loss = get_loss(name, **params)
    z, c, cp, lam = _batch(n=16, K=5, seed=3)
    v = torch.randn_like(z)
    step = 1e-6
    fd_grad = (loss(z + step * v, c, cp, lam) - loss(z - step * v, c, cp, lam)) / (2 * step)
    assert torch.allclose((loss.grad(z, c, cp, lam) * v).sum(-1), fd_grad, rtol=1e-7, atol=1e-8)
    fd_hvp = (loss.grad(z + step * v, c, cp, lam) - loss.grad(z - step * v, c, cp, lam)) / (2 * step)
    assert torch.allclose(loss.hvp(z, c, cp, lam, v), fd_hvp, rtol=1e-6, atol=1e-7)


def test_registry_names_and_errors():
    assert {"ce", "mse", "label_smoothing", "focal", "logit_adjusted"} <= set(LOSSES)
    with pytest.raises(ValueError, match=f"unknown loss 'hinge'; known losses: {', '.join(sorted(LOSSES))}"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="allowed parameters: \\['gamma'\\]"):
        get_loss("focal", eps=0.1)
    with pytest.raises(ValueError, match="eps must lie in \\[0, 1\\), got 1.0"):
        get_loss("label_smoothing", eps=1.0)
    with pytest.raises(ValueError, match="form for 'ce' must be 'soft' or 'pair'"):
        get_loss("ce", form="hard")
    assert get_loss("focal").convex is False and get_loss("ce").convex is True
    assert get_loss("ce", form="pair") == get_loss("ce", form="pair")
    assert repr(get_loss("focal", gamma=1.0)) == "get_loss('focal', gamma=1.0)"
