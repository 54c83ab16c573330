"""Multi-task loss of γ-PhysNet and the ways to balance its tasks.

Tasks: ``class`` (cross-entropy on all events), and on gammas only ``energy`` (L1 on log10 E),
``direction`` (L1 on the TelescopeFrame offsets, deg) and ``impact`` (L1 on the core position
relative to the telescope, km): hadron showers carry no meaningful point-source direction.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TASKS", "task_losses", "MultiTaskLoss", "FixedWeighting", "UncertaintyWeighting",
           "GradNorm", "BALANCING"]

TASKS = ("class", "energy", "direction", "impact")


def task_losses(outputs, targets, label_smoothing=0.0):
    """Per-task losses of a batch.

    ``targets``: ``label`` (B,) long (1 = gamma), ``log_energy`` (B,), ``direction`` (B, 2),
    ``impact`` (B, 2). A batch without gammas gives zero regression losses (graph kept).
    """
    label = targets["label"]
    losses = {"class": F.cross_entropy(outputs["class_logits"].float(), label,
                                       label_smoothing=label_smoothing)}
    gamma = label == 1
    n_gamma = gamma.sum().clamp(min=1)
    for task, key in (("energy", "log_energy"), ("direction", "direction"), ("impact", "impact")):
        # select rather than multiply by the mask: a hadron's target may be undefined (NaN)
        error = (outputs[key][gamma].float() - targets[key][gamma]).abs()
        if error.dim() == 2:
            error = error.mean(dim=1)
        losses[task] = error.sum() / n_gamma
    return losses


class FixedWeighting(nn.Module):
    """Weighted sum with fixed weights."""

    def __init__(self, weights=None):
        super().__init__()
        weights = weights or {}
        unknown = set(weights) - set(TASKS)
        if unknown:
            raise ValueError(f"loss weights for unknown tasks {sorted(unknown)}, "
                             f"tasks are {list(TASKS)}")
        self.register_buffer("weights", torch.tensor([float(weights.get(t, 1.0)) for t in TASKS]))

    def forward(self, losses, shared_parameters=None):
        return sum(w * losses[t] for w, t in zip(self.weights, TASKS))

    def task_weights(self):
        return dict(zip(TASKS, self.weights.tolist()))


class UncertaintyWeighting(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018).

    With ``s = log σ`` learned per task, the total is ``Σ exp(-s) L + s``: the Laplace
    likelihood of an L1 loss; a noisy task learns a large σ and weighs less.
    """

    def __init__(self):
        super().__init__()
        self.log_sigma = nn.Parameter(torch.zeros(len(TASKS)))

    def forward(self, losses, shared_parameters=None):
        stacked = torch.stack([losses[t] for t in TASKS])
        return (torch.exp(-self.log_sigma) * stacked + self.log_sigma).sum()

    def task_weights(self):
        return dict(zip(TASKS, torch.exp(-self.log_sigma.detach()).tolist()))


class GradNorm(nn.Module):
    """GradNorm (Chen et al. 2018): weights that equalise the tasks' gradient norms.

    The network is trained on ``Σ w_t L_t`` with the weights held fixed; the weights themselves
    get the gradient of ``Σ |G_t − mean(G) · r_t^α|``, where ``G_t`` is the norm of the gradient
    of ``w_t L_t`` on the last shared layer and ``r_t`` the task's relative inverse training rate.
    That gradient is placed in ``weights.grad`` here, so the optimizer step updates them; the
    weights are renormalised to sum to the number of tasks before each use.
    """

    def __init__(self, alpha=1.5):
        super().__init__()
        self.alpha = alpha
        self.weights = nn.Parameter(torch.ones(len(TASKS)))
        self.register_buffer("initial_losses", torch.zeros(len(TASKS)))

    @staticmethod
    def _renormalised(weights):
        """Weights clamped to ≥ 1e-3 and scaled to sum to the number of tasks."""
        weights = weights.clamp(min=1e-3)
        return weights * (len(TASKS) / weights.sum())

    def forward(self, losses, shared_parameters=None):
        with torch.no_grad():
            self.weights.copy_(self._renormalised(self.weights))
        stacked = torch.stack([losses[t] for t in TASKS])
        if self.training and shared_parameters is not None and torch.is_grad_enabled():
            self._set_weight_gradient(stacked, shared_parameters)
        return (self.weights.detach() * stacked).sum()

    def _set_weight_gradient(self, stacked, shared_parameters):
        # each task's reference is its first non-zero loss: a batch without gammas has none
        unset = self.initial_losses <= 0
        self.initial_losses.copy_(torch.where(unset, stacked.detach(), self.initial_losses))
        norms = []
        for i in range(len(TASKS)):
            grads = torch.autograd.grad(self.weights[i] * stacked[i], shared_parameters,
                                        retain_graph=True, create_graph=True, allow_unused=True)
            grads = [g for g in grads if g is not None]
            # vector_norm: its gradient at a zero norm is 0, where sqrt's is NaN (a task whose
            # head starts at zero, as the direction votes do, has no gradient on the layer yet)
            norms.append(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])) if grads
                         else stacked.new_zeros(()))
        norms = torch.stack(norms)
        ratio = stacked.detach() / self.initial_losses.clamp(min=1e-12)
        target = (norms.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        balance = (norms - target).abs().sum()
        (weight_grad,) = torch.autograd.grad(balance, self.weights, retain_graph=True)
        self.weights.grad = weight_grad

    def task_weights(self):
        """The weights of the next step: renormalised, as ``forward`` will use them."""
        return dict(zip(TASKS, self._renormalised(self.weights.detach()).tolist()))


BALANCING = {"uncertainty": UncertaintyWeighting, "gradnorm": GradNorm, "fixed": FixedWeighting}


class MultiTaskLoss(nn.Module):
    """Per-task losses combined by a balancing scheme (``uncertainty``, ``gradnorm``, ``fixed``)."""

    def __init__(self, balancing="uncertainty", weights=None, label_smoothing=0.0):
        super().__init__()
        if balancing not in BALANCING:
            raise ValueError(f"unknown loss balancing {balancing!r}, choose from {list(BALANCING)}")
        self.balancing = FixedWeighting(weights) if balancing == "fixed" else BALANCING[balancing]()
        self.label_smoothing = label_smoothing

    def forward(self, outputs, targets, shared_parameters=None):
        """Total loss and the detached per-task losses."""
        losses = task_losses(outputs, targets, self.label_smoothing)
        total = self.balancing(losses, shared_parameters)
        return total, {t: v.detach() for t, v in losses.items()}
