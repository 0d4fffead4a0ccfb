import math

import pytest
import torch

from dermo.losses import attention_loss, focal_loss, kd_loss, mag_kd_loss, resize_attention


def test_focal_hand_computed():
    # logits [0, ln 3] -> p = [0.25, 0.75]. Target 1: p_t = 0.75; target 0: p_t = 0.25. gamma = 2.
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    y = torch.tensor([1, 0])
    l1 = (0.25 ** 2) * -math.log(0.75)
    l0 = (0.75 ** 2) * -math.log(0.25)
    assert focal_loss(logits, y, gamma=2.0).item() == pytest.approx((l1 + l0) / 2, rel=1e-6)
    # class weights [1, 4]: weighted mean (4*l1 + 1*l0) / 5
    assert focal_loss(logits, y, 2.0, [1, 4]).item() == pytest.approx((4 * l1 + l0) / 5, rel=1e-6)
    # gamma 0 is weighted cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, y, weight=torch.tensor([1.0, 4.0]))
    assert focal_loss(logits, y, 0.0, [1, 4]).item() == pytest.approx(ce.item(), rel=1e-6)


def test_kd_hand_computed_and_zero_for_equal():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, 10.0]])
    T = 5.0
    # teacher/T = [0, 2] -> q = [1/(1+e^2), e^2/(1+e^2)]; student uniform p = [.5, .5]
    q1 = math.exp(2) / (1 + math.exp(2))
    q0 = 1 - q1
    kl = q0 * math.log(q0 / 0.5) + q1 * math.log(q1 / 0.5)
    assert kd_loss(s, t, T).item() == pytest.approx(kl * T * T, rel=1e-5)
    z = torch.randn(8, 2)
    assert kd_loss(z, z.clone(), T).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_resize_and_mse():
    t = torch.zeros(1, 14, 14)
    t[0, :2, :2] = 1.0
    t = t / t.sum()
    r = resize_attention(t, (7, 7))
    assert r.shape == (1, 7, 7) and r.sum().item() == pytest.approx(1.0)
    assert r[0, 0, 0].item() == pytest.approx(1.0)  # the 2x2 block pools into one cell
    assert attention_loss(r, t).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((1, 7, 7), 1 / 49)
    # scaled maps: uniform -> all ones; r -> 49 at one cell, 0 elsewhere: MSE = ((49-1)^2 + 48*1) / 49
    assert attention_loss(uniform, t).item() == pytest.approx(((49 - 1) ** 2 + 48) / 49, rel=1e-5)


def test_mag_kd_weighted_sum_and_terms():
    torch.manual_seed(0)
    s, t = torch.randn(4, 2), torch.randn(4, 2)
    sa = torch.softmax(torch.randn(4, 49), 1).view(4, 7, 7)
    ta = torch.softmax(torch.randn(4, 196), 1).view(4, 14, 14)
    y = torch.tensor([0, 1, 0, 1])
    terms = mag_kd_loss(s, sa, y, t, ta, alpha=0.4, beta=0.3, gamma=0.3)
    expected = 0.4 * focal_loss(s, y, 2.0, (1, 4)) + 0.3 * kd_loss(s, t, 5.0) + 0.3 * attention_loss(sa, ta)
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = mag_kd_loss(s, sa, y)
    assert plain.kd.item() == 0 and plain.att.item() == 0 and plain.loss.item() == plain.cls.item()
