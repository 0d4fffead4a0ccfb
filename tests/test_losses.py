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


def test_warp_attention_follows_flips_and_quarter_turns():
    import math

    from dermo.losses import warp_attention

    torch.manual_seed(0)
    att = torch.softmax(torch.randn(3, 7 * 7), 1).view(3, 7, 7)

    def theta(angle: float, flip: float) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        return torch.tensor([[c * flip, -s, 0.0], [s * flip, c, 0.0]]).expand(3, 2, 3)

    torch.testing.assert_close(warp_attention(att, theta(0.0, 1.0)), att)
    torch.testing.assert_close(warp_attention(att, theta(0.0, -1.0)), att.flip(-1))
    quarter = warp_attention(att, theta(math.pi / 2, 1.0))
    assert any(torch.allclose(quarter, att.rot90(k, (1, 2)), atol=1e-5) for k in (1, 3))
    assert torch.allclose(quarter.sum((1, 2)), torch.ones(3))


def test_augment_batch_theta_moves_pixels_like_warp_attention():
    """The matrices returned by augment_batch are the ones that moved the pixels: a map warped with them lands
    where the augmented image's content went (colour jitter aside, which is a per-image affine of intensities)."""
    from dermo.data import augment_batch
    from dermo.losses import warp_attention

    torch.manual_seed(1)
    m = torch.zeros(4, 16, 16)
    m[:, 2:6, 3:9] = 1.0  # an off-centre blob
    m = m + 0.05
    x = m.unsqueeze(1).expand(4, 3, 16, 16).contiguous() * 0.5  # grey image, far from clipping
    y, theta = augment_batch(x, torch.Generator().manual_seed(3), return_theta=True)
    warped = warp_attention(m / m.sum((1, 2), keepdim=True), theta)
    g = y.mean(1)  # grey stays grey; jitter is a*pixel + b per image
    for i in range(4):
        r = torch.corrcoef(torch.stack([g[i].flatten(), warped[i].flatten()]))[0, 1]
        assert r > 0.99, (i, float(r))
