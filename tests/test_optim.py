"""normlib.optim: SGDWDMimic, Hoffer et al.'s per-channel learning-rate correction, and channel norms."""

import pytest
import torch

from normlib.optim import SGDWDMimic, channel_norms, project_channel_norms


def test_channel_norms_are_the_rows_of_the_flattened_weight():
    w = torch.arange(12.0).view(3, 2, 2)
    assert torch.equal(channel_norms(w), w.view(3, -1).norm(dim=1))


def test_correction_optimizer_scales_each_channel_by_the_norm_ratio():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2, 3, 3))
    w.grad = torch.randn_like(w)
    reference = channel_norms(w) * torch.tensor([1.0, 2.0, 0.5])
    before = w.detach().clone()
    opt = SGDWDMimic([{"params": [w], "correct": True}], lr=0.1)
    opt.set_reference_norms([reference])
    opt.step()
    scales = (channel_norms(before) / reference) ** 2
    expected = before - 0.1 * scales.view(3, 1, 1, 1) * w.grad
    assert torch.allclose(w.detach(), expected)
    assert scales.tolist() == pytest.approx([1.0, 0.25, 4.0])
    with pytest.raises(ValueError, match="reference norm"):
        opt.set_reference_norms([reference, reference])


def test_correction_optimizer_without_correction_is_torch_sgd():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4, 5))
    b = torch.nn.Parameter(a.detach().clone())
    mine = SGDWDMimic([a], lr=0.1, momentum=0.9, weight_decay=1e-2)
    ref = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(3):
        grad = torch.randn(4, 5)
        a.grad, b.grad = grad.clone(), grad.clone()
        mine.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_reference_norms_are_read_back_as_set():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    plain = torch.nn.Parameter(torch.randn(2))
    opt = SGDWDMimic([{"params": [w], "correct": True}, {"params": [plain]}], lr=0.1)
    assert opt.corrected_params() == [w]
    with pytest.raises(RuntimeError, match="set_reference_norms"):
        opt.reference_norms(w)
    reference = torch.tensor([1.0, 2.0, 3.0, 4.0])  # float32: kept in the parameter's dtype
    opt.set_reference_norms([reference])
    assert opt.reference_norms(w).dtype == torch.float64 and torch.equal(opt.reference_norms(w), reference.double())
    assert torch.equal(opt.step_scales(w), (channel_norms(w) / reference.double()) ** 2)
    with pytest.raises(RuntimeError, match="corrected group"):
        opt.reference_norms(plain)
    with pytest.raises(ValueError, match="output channels"):
        opt.set_reference_norms([torch.ones(3)])


def test_correction_optimizer_caps_the_step_scale_and_counts_the_cut_channels():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4))
    w.grad = torch.randn_like(w)
    before = w.detach().clone()
    reference = channel_norms(w) * torch.tensor([1.0, 0.1, 0.5])  # scales 1, 100, 4
    opt = SGDWDMimic([{"params": [w], "correct": True}], lr=0.1, max_step_scale=10.0)
    opt.set_reference_norms([reference])
    opt.step()
    expected = before - 0.1 * torch.tensor([1.0, 10.0, 4.0]).view(3, 1) * w.grad
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert opt.clipped == 1 and opt.clipped_steps == 1
    with pytest.raises(ValueError, match="max_step_scale"):
        SGDWDMimic([w], lr=0.1, max_step_scale=0.0)


def test_projection_sets_each_channel_norm_and_keeps_its_direction():
    torch.manual_seed(0)
    w = torch.randn(3, 2, 3, 3)
    direction = w / channel_norms(w).view(3, 1, 1, 1)
    target = torch.tensor([0.5, 2.0, 7.0])
    project_channel_norms(w, target)
    assert torch.allclose(channel_norms(w), target)
    assert torch.allclose(w / channel_norms(w).view(3, 1, 1, 1), direction, atol=1e-6)
