"""Multi-task loss: gammas-only regression, and the three ways to balance the tasks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctapipe_gammaphysnet.nn.losses import TASKS, GradNorm, MultiTaskLoss, task_losses


def batch(labels, seed=0):
    """Random network outputs (requiring grad) and targets for the given labels (1 = gamma)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    outputs = {
        "class_logits": torch.randn(n, 2, generator=gen),
        "log_energy": torch.randn(n, generator=gen),
        "direction": torch.randn(n, 2, generator=gen),
        "impact": torch.randn(n, 2, generator=gen),
    }
    for value in outputs.values():
        value.requires_grad_(True)
    targets = {
        "label": torch.tensor(labels, dtype=torch.long),
        "log_energy": torch.randn(n, generator=gen),
        "direction": torch.randn(n, 2, generator=gen),
        "impact": torch.randn(n, 2, generator=gen),
    }
    return outputs, targets


LABELS = [1, 0, 1, 1, 0, 0, 1, 0]


def test_task_losses_values():
    outputs, targets = batch(LABELS)
    losses = task_losses(outputs, targets)
    assert set(losses) == set(TASKS)
    gamma = np.array(LABELS) == 1
    out = {k: v.detach().numpy() for k, v in outputs.items()}
    tgt = {k: v.numpy() for k, v in targets.items()}
    assert losses["energy"].item() == pytest.approx(
        np.abs(out["log_energy"] - tgt["log_energy"])[gamma].mean(), rel=1e-6)
    for task in ("direction", "impact"):
        assert losses[task].item() == pytest.approx(
            np.abs(out[task] - tgt[task])[gamma].mean(), rel=1e-6)
    expected_ce = F.cross_entropy(outputs["class_logits"], targets["label"])
    assert losses["class"].item() == pytest.approx(expected_ce.item())
    smoothed = task_losses(outputs, targets, label_smoothing=0.1)["class"]
    assert smoothed.item() != pytest.approx(losses["class"].item())


def test_regression_ignores_hadrons():
    outputs, targets = batch(LABELS)
    reference = task_losses(outputs, targets)
    proton = LABELS.index(0)
    changed = {k: v.clone() for k, v in targets.items()}
    changed["log_energy"][proton] += 5.0
    changed["direction"][proton] -= 3.0
    changed["impact"][proton] += 1.0
    # a proton's regression target may even be missing (NaN): it does not enter
    changed["log_energy"][LABELS.index(0, proton + 1)] = float("nan")
    losses = task_losses(outputs, changed)
    for task in TASKS:
        assert losses[task].item() == reference[task].item(), task
    # and the hadrons' regression outputs get no gradient
    sum(losses[t] for t in ("energy", "direction", "impact")).backward()
    hadron = torch.tensor(LABELS) == 0
    for key in ("log_energy", "direction", "impact"):
        grad = outputs[key].grad
        assert torch.all(grad[hadron] == 0), key
        assert torch.all(grad[~hadron] != 0), key


@pytest.mark.parametrize("balancing", ["uncertainty", "gradnorm", "fixed"])
def test_batch_without_gammas(balancing):
    outputs, targets = batch([0, 0, 0, 0])
    loss = MultiTaskLoss(balancing)
    total, losses = loss(outputs, targets)
    for task in ("energy", "direction", "impact"):
        assert losses[task].item() == 0.0
    assert losses["class"].item() > 0
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(outputs["class_logits"].grad).all()
    assert torch.all(outputs["log_energy"].grad == 0)


def test_uncertainty_weighting():
    outputs, targets = batch(LABELS)
    loss = MultiTaskLoss()  # the default
    assert loss.balancing.__class__.__name__ == "UncertaintyWeighting"
    with torch.no_grad():
        loss.balancing.log_sigma.copy_(torch.tensor([0.0, 0.5, -0.3, 1.0]))
    total, losses = loss(outputs, targets)
    s = loss.balancing.log_sigma.detach()
    expected = sum(torch.exp(-s[i]) * losses[t] + s[i] for i, t in enumerate(TASKS))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    grad = loss.balancing.log_sigma.grad
    assert grad is not None and torch.all(grad != 0)
    # d/ds (e^-s L + s) = 1 - e^-s L
    expected_grad = torch.stack([1 - torch.exp(-s[i]) * losses[t] for i, t in enumerate(TASKS)])
    torch.testing.assert_close(grad, expected_grad)
    assert loss.balancing.task_weights()["energy"] == pytest.approx(np.exp(-0.5))
    # the per-task losses returned are detached
    assert all(not v.requires_grad for v in losses.values())


def test_fixed_weights_multiply():
    outputs, targets = batch(LABELS)
    weights = {"class": 2.0, "energy": 0.5, "direction": 3.0}
    total, losses = MultiTaskLoss("fixed", weights=weights)(outputs, targets)
    expected = (2.0 * losses["class"] + 0.5 * losses["energy"] + 3.0 * losses["direction"]
                + 1.0 * losses["impact"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not list(MultiTaskLoss("fixed").parameters())
    with pytest.raises(ValueError, match="energie"):
        MultiTaskLoss("fixed", weights={"energie": 2.0})


def test_unknown_balancing():
    with pytest.raises(ValueError, match="unknown loss balancing 'kendall'.*uncertainty"):
        MultiTaskLoss("kendall")


class SharedTrunk(torch.nn.Module):
    """A shared layer and one head per output, standing in for the network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh())
        self.heads = torch.nn.ModuleDict({
            "class_logits": torch.nn.Linear(16, 2), "log_energy": torch.nn.Linear(16, 1),
            "direction": torch.nn.Linear(16, 2), "impact": torch.nn.Linear(16, 2),
        })

    def forward(self, x):
        features = self.trunk(x)
        out = {key: head(features) for key, head in self.heads.items()}
        out["log_energy"] = out["log_energy"].squeeze(1)
        return out


def _trunk_batch(labels, seed):
    _, targets = batch(labels, seed)
    return torch.randn(len(labels), 6, generator=torch.Generator().manual_seed(seed)), targets


def test_gradnorm():
    network = SharedTrunk()
    shared = list(network.trunk.parameters())
    loss = MultiTaskLoss("gradnorm")
    gradnorm = loss.balancing
    assert isinstance(gradnorm, GradNorm)
    optimizer = torch.optim.SGD(list(network.parameters()) + list(loss.parameters()), lr=0.05)
    for step in range(3):
        x, targets = _trunk_batch(LABELS, seed=step)
        optimizer.zero_grad()
        total, losses = loss(network(x), targets, shared_parameters=shared)
        # the weights used are renormalised to sum to the number of tasks
        assert gradnorm.weights.sum().item() == pytest.approx(len(TASKS), rel=1e-5)
        weights = gradnorm.weights.detach().clone()
        assert total.item() == pytest.approx(
            sum(weights[i] * losses[t] for i, t in enumerate(TASKS)).item(), rel=1e-5)
        grad = gradnorm.weights.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        total.backward()
        # the network's backward pass leaves the weights' GradNorm gradient alone
        torch.testing.assert_close(gradnorm.weights.grad, grad)
        optimizer.step()
        assert not torch.equal(gradnorm.weights.detach(), weights)
    # in evaluation, or without shared parameters, the weights get no gradient
    gradnorm.weights.grad = None
    loss.eval()
    loss(network(x), targets, shared_parameters=shared)
    assert gradnorm.weights.grad is None


def test_gradnorm_with_a_task_that_has_no_gradient_yet():
    """A head that starts at zero (the network's direction votes) gives its task a zero gradient
    on the shared layer: the weights' gradient stays finite."""
    network = SharedTrunk()
    with torch.no_grad():
        network.heads["direction"].weight.zero_()
    loss = MultiTaskLoss("gradnorm")
    x, targets = _trunk_batch(LABELS, seed=0)
    loss(network(x), targets, shared_parameters=list(network.trunk.parameters()))
    assert torch.isfinite(loss.balancing.weights.grad).all()


def test_gradnorm_reference_losses_skip_batches_without_gammas():
    """A first batch without gammas has no regression loss: the tasks' reference losses are
    taken from the first batch that has one, so the training-rate ratios stay finite."""
    network = SharedTrunk()
    shared = list(network.trunk.parameters())
    loss = MultiTaskLoss("gradnorm")
    x, targets = _trunk_batch([0, 0, 0], seed=1)
    loss(network(x), targets, shared_parameters=shared)
    initial = loss.balancing.initial_losses
    assert initial[0] > 0 and torch.all(initial[1:] == 0)
    x, targets = _trunk_batch(LABELS, seed=2)
    _, losses = loss(network(x), targets, shared_parameters=shared)
    for i, task in enumerate(TASKS[1:], start=1):
        assert initial[i].item() == pytest.approx(losses[task].item())
