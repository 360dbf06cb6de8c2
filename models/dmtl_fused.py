"""DMTL's training step with hand-derived gradients: the same network, loss and Adam update as
autograd on ``DMTLNetwork``, without the autograd engine: ~300 aten calls per 1024-row step
instead of ~430 (profiler count), 1.1-1.4x less time per epoch on CPU (docs/performance.md).

Why: at DMTL's widths (32-250) a step is dominated by per-op cost, not by its matrix products
(docs/performance.md, "DMTL training speed"). This step
  - keeps every parameter in one flat buffer (the network's parameters become views of it), so
    Adam is one fused kernel over one tensor and one memset zeroes every gradient;
  - takes the cross-entropy from the profiling softmax it already has (one exp pass, not three);
  - draws dropout masks as 16-bit integers (four per 64-bit draw) and applies them with one
    comparison-free kernel; the drop probability is rounded to a multiple of 1/65536 (0.1 ->
    0.100006) and the kept units are scaled by the exact inverse of the keep probability;
  - uses the activations' own backward kernels (``torch.ops.aten.*_backward``).
Evaluation and prediction use ``DMTLNetwork.forward`` (no dropout, so there is nothing to match).
``tests/test_dmtl.py`` checks that this step's gradients equal autograd's for every attention
mode, activation and λ, that its dropout keeps the configured share, and that a step equals
``torch.optim.Adam`` on the autograd gradients.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

aten = torch.ops.aten

# activation -> backward(grad, pre-activation, activation output); nn defaults (GELU exact,
# LeakyReLU slope 0.01, ELU alpha 1) as in models.dmtl.ACTIVATIONS
ACTIVATION_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda grad, pre, out: aten.threshold_backward(grad, out, 0),
    "gelu": lambda grad, pre, out: aten.gelu_backward(grad, pre),
    "tanh": lambda grad, pre, out: aten.tanh_backward(grad, out),
    "sigmoid": lambda grad, pre, out: aten.sigmoid_backward(grad, out),
    "elu": lambda grad, pre, out: aten.elu_backward(grad, 1.0, 1, 1, True, out),
    "leaky_relu": lambda grad, pre, out: aten.leaky_relu_backward(grad, pre, 0.01, False),
}

DROP_LEVELS = 65536  # dropout masks are 16-bit integers


def dropout_constants(p: float) -> tuple[bool, float, float]:
    """-> (active, threshold, keep_scale) for drop probability ``p``: a unit is kept iff its int16
    draw > threshold, i.e. P(keep) = (DROP_LEVELS - round(p * DROP_LEVELS)) / DROP_LEVELS, and kept
    units are scaled by the exact inverse of that probability."""
    dropped = round(p * DROP_LEVELS)
    return dropped > 0, -DROP_LEVELS // 2 + dropped - 0.5, DROP_LEVELS / (DROP_LEVELS - dropped)


def flatten_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every parameter of ``module`` into one flat buffer (parameters become views of it)
    and give each a gradient that is a view of one flat gradient buffer. -> (params, grads)."""
    params = [p for p in module.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grads = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset:offset + n].view_as(p)
        p.grad = grads[offset:offset + n].view_as(p)
        offset += n
    return flat, grads


class FusedTrainingStep:
    """``step(user, item, xu, xi, rating, group)`` does forward, loss, backward and Adam in one go and
    returns the batch's (rating loss, profiling loss) as a (2,) tensor (no host sync)."""

    def __init__(self, net: nn.Module, lambda_profile: float, lr: float, weight_decay: float,
                 dropout: float, activation: str, attention: str, generator: torch.Generator):
        self.net = net
        self.lam = float(lambda_profile)
        self.act = net.act
        self.act_backward = ACTIVATION_BACKWARD[activation]
        self.generator = generator
        self.dropout, self.drop_threshold, self.keep_scale = dropout_constants(dropout)
        flat, self.grads = flatten_parameters(net)
        flat_param = nn.Parameter(flat)  # shares flat's storage, so Adam updates the network's views
        flat_param.grad = self.grads
        # Adam over the one flat tensor: torch's fused kernel, PyTorch's own update rule
        self.optimizer = torch.optim.Adam([flat_param], lr=lr, weight_decay=weight_decay,
                                          fused=flat.device.type in ("cpu", "cuda"))
        self.softmax_attention = attention == "softmax"
        self.uniform_attention = attention == "uniform"

    def dropout_draws(self, rows: int, width: int, device: torch.device) -> torch.Tensor:
        """(rows, width) float tensor of uniform integers in [-32768, 32767]."""
        words = torch.empty(math.ceil(rows * width / 4), dtype=torch.int64, device=device)
        words.random_(-2**63, 2**63 - 1, generator=self.generator)  # all 64 bits (plain random_() leaves the sign bit 0)
        return words.view(torch.int16)[:rows * width].view(rows, width).float()

    @torch.no_grad()
    def __call__(self, user: torch.Tensor, item: torch.Tensor, xu: torch.Tensor, xi: torch.Tensor,
                 rating: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        net, act, act_bw = self.net, self.act, self.act_backward
        b = len(user)
        scale = 1.0 / b  # both losses are batch means
        du = net.user_embedding.weight.shape[1]
        # ---- forward (same algebra as DMTLNetwork.forward) ----
        pre = torch.empty(b, du + net.item_embedding.weight.shape[1], dtype=xu.dtype, device=xu.device)
        pu, pi = pre[:, :du], pre[:, du:]
        torch.addmm(net.user_projection.bias, xu, net.user_projection.weight.T, out=pu)
        pu.add_(net.user_embedding.weight.index_select(0, user))
        torch.addmm(net.item_projection.bias, xi, net.item_projection.weight.T, out=pi)
        pi.add_(net.item_embedding.weight.index_select(0, item))
        h = act(pre)                      # [hu ; hi]
        hu, hi = h[:, :du], h[:, du:]
        alpha = None
        if self.softmax_attention:
            alpha = torch.softmax(torch.addmm(net.attention_layer.bias, h, net.attention_layer.weight.T), dim=1)
        s = torch.empty_like(h)          # [hu ; α ⊙ hi]
        s[:, :du] = hu
        if alpha is not None:
            torch.mul(alpha, hi, out=s[:, du:])
        elif self.uniform_attention:
            torch.mul(hi, 1.0 / hi.shape[1], out=s[:, du:])
        else:
            s[:, du:] = hi
        z_pre = torch.addmm(net.shared.bias, s, net.shared.weight.T)
        z_act = act(z_pre)
        if self.dropout:
            draws = self.dropout_draws(b, z_act.shape[1], z_act.device)
            z = aten.threshold_backward(z_act * self.keep_scale, draws, self.drop_threshold)
        else:
            z = z_act
        logits = torch.addmm(net.profile_head.bias, z, net.profile_head.weight.T)
        sig = torch.sigmoid(torch.addmv(net.rating_head.bias, z, net.rating_head.weight[0]))
        error = (net.low + net.span * sig) - rating
        l_rec = error.square().mean()
        prob = torch.softmax(logits, dim=1)
        picked = prob.gather(1, group[:, None]).squeeze(1)
        # -log p_g from the softmax we need anyway; the clamp only matters once p_g underflows
        # float32 (CE > 87), i.e. in a diverged run
        l_prof = -picked.clamp_min(torch.finfo(prob.dtype).tiny).log().mean()

        # ---- backward: gradients are added into the zeroed flat buffer ----
        self.grads.zero_()
        d_r = aten.sigmoid_backward(error * (2.0 * net.span * scale), sig)     # dL/d rating logit
        net.rating_head.weight.grad[0].addmv_(z.T, d_r)
        net.rating_head.bias.grad.add_(d_r.sum())
        dz = torch.outer(d_r, net.rating_head.weight[0])
        if self.lam > 0:  # λ = 0: the profiling head is measured, never trained
            d_logits = prob.mul_(self.lam * scale)
            d_logits.scatter_add_(1, group[:, None],
                                  torch.full((b, 1), -self.lam * scale, dtype=prob.dtype, device=prob.device))
            net.profile_head.weight.grad.addmm_(d_logits.T, z)
            net.profile_head.bias.grad.add_(d_logits.sum(0))
            dz.addmm_(d_logits, net.profile_head.weight)
        if self.dropout:
            dz = aten.threshold_backward(dz, draws, self.drop_threshold).mul_(self.keep_scale)
        dz_pre = act_bw(dz, z_pre, z_act)
        net.shared.weight.grad.addmm_(dz_pre.T, s)
        net.shared.bias.grad.add_(dz_pre.sum(0))
        ds = dz_pre @ net.shared.weight   # d[hu ; α ⊙ hi]
        dh = torch.empty_like(h)
        dh[:, :du] = ds[:, :du]
        ds_hi = ds[:, du:]
        if alpha is not None:
            torch.mul(ds_hi, alpha, out=dh[:, du:])
            d_att = aten._softmax_backward_data(ds_hi * hi, alpha, 1, alpha.dtype)
            net.attention_layer.weight.grad.addmm_(d_att.T, h)
            net.attention_layer.bias.grad.add_(d_att.sum(0))
            dh.addmm_(d_att, net.attention_layer.weight)
        elif self.uniform_attention:
            torch.mul(ds_hi, 1.0 / hi.shape[1], out=dh[:, du:])
        else:
            dh[:, du:] = ds_hi
        d_pre = act_bw(dh, pre, h)
        for projection, table, x, ids, grad in ((net.user_projection, net.user_embedding, xu, user, d_pre[:, :du]),
                                                (net.item_projection, net.item_embedding, xi, item, d_pre[:, du:])):
            projection.weight.grad.addmm_(grad.T, x)
            projection.bias.grad.add_(grad.sum(0))
            table.weight.grad.index_add_(0, ids, grad)
            table.weight.grad[0].zero_()  # the padding row (unknown id) stays zero, as in nn.Embedding
        self.optimizer.step()
        return torch.stack([l_rec, l_prof])
