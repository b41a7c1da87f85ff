"""NT-Xent variants for SimCLR's false negatives: in-batch negatives of the anchor's own class.

With C balanced classes about 1/C of an anchor's 2N - 2 negatives share its class (~10% on
digits or CIFAR-10), and NT-Xent pushes them away all the same. ``negatives`` in
``conf/method/simclr.yaml`` picks the answer; ``standard`` is
:func:`sslsweep.trainables.tasks.simclr.nt_xent`, untouched. Every loss here takes the two views'
projections ``z1, z2`` of shape (N, D), computes in fp32 whatever the autocast (as ``nt_xent``)
and averages over all 2N anchors. Notation: anchor i, its positive p (the other view of its
image), its M = 2N - 2 negatives k (every other view), s = cosine similarity, t = temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslsweep.rules import HP_RULES, require


def pair_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (2N, 2N) fp32 matrix s / t of the 2N views (row i: anchor i, diagonal included) and each
    row's positive (2N,). Call with autocast disabled, as every loss here does."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    idx = torch.arange(n, device=z.device)
    return z @ z.T / temperature, torch.cat([idx + n, idx])


def debiased_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: float) -> torch.Tensor:
    """Debiased contrastive loss (Chuang, Robinson, Lin, Torralba & Jegelka, NeurIPS 2020,
    "Debiased Contrastive Learning", sec. 3: the objective with one positive per anchor and the
    clipped estimator g, as in the authors' code github.com/chingyaoc/DCL; the paper's N negatives
    are SimCLR's M = 2N - 2).

    The mean of e^{s_ik/t} over the negatives estimates the term of *true* negatives once the
    expected share tau_plus of same-class samples (the class prior: 1/C for C balanced classes)
    is taken out, using the positive as the sample of that class::

        g_i    = max( (mean_k e^{s_ik/t} - tau_plus e^{s_ip/t}) / (1 - tau_plus),  e^{-1/t} )
        loss_i = -log( e^{s_ip/t} / (e^{s_ip/t} + M g_i) )

    The clip at e^{-1/t}, the least e^{s/t} can be (s >= -1), keeps the estimate positive. With
    tau_plus = 0 the clip never binds (a mean of terms >= e^{-1/t}) and M g_i is NT-Xent's sum.

    Args:
        z1, z2: (N, D) projections of the two views.
        temperature: t > 0.
        tau_plus: the class prior, in [0, 1).
    """
    valid, rule = HP_RULES["tau_plus"]
    require(valid(tau_plus), "tau_plus", tau_plus, rule)
    with torch.autocast(z1.device.type, enabled=False):
        sim, pos = pair_logits(z1, z2, temperature)
        n2 = sim.shape[0]
        pos_logit = sim.gather(1, pos[:, None])  # (2N, 1)
        is_neg = ~torch.eye(n2, dtype=torch.bool, device=sim.device)
        is_neg[torch.arange(n2, device=sim.device), pos] = False
        neg = sim[is_neg].view(n2, n2 - 2)  # (2N, M)
        # every term is scaled by e^{-shift} (the row's largest logit), so exp cannot overflow at small t
        shift = torch.maximum(pos_logit, neg.amax(dim=1, keepdim=True)).detach()
        pos_e = (pos_logit - shift).exp()
        g = (((neg - shift).exp().mean(dim=1, keepdim=True) - tau_plus * pos_e) / (1 - tau_plus))
        g = torch.maximum(g, (-1 / temperature - shift).exp())
        return ((pos_e + (n2 - 2) * g).log() - (pos_logit - shift)).mean()


def top_k_negatives(sim: torch.Tensor, pos: torch.Tensor, k: int) -> torch.Tensor:
    """(2N, 2N) bool: row i marks the k negatives of anchor i with the highest ``sim`` (no gradient)."""
    cand = sim.detach().clone()
    cand.fill_diagonal_(float("-inf"))
    cand[torch.arange(len(pos), device=sim.device), pos] = float("-inf")  # neither itself nor its positive
    mask = torch.zeros_like(cand, dtype=torch.bool)
    return mask.scatter_(1, cand.topk(k, dim=1).indices, True)


def fnc_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, k: int, *,
                attract: bool = False) -> torch.Tensor:
    """False negative cancellation (Huynh, Kornblith, Walter, Maire & Khademi, WACV 2022, "Boosting
    Contrastive Self-Supervised Learning with False Negative Cancellation", sec. 3).

    F_i, the false negatives of anchor i, are here its k negatives with the highest s_ik, taken
    from the same (detached) similarities the loss uses, anchor view by anchor view, within the
    batch. The paper finds them differently: it scores each candidate view by its largest
    similarity to any view of the anchor's image, including extra "support views" of it, optionally
    keeps only scores above a threshold, and uses that one set for every view of the anchor image.
    There are no support views or threshold here. Elimination (``attract=False``) drops F_i from
    the denominator; attraction counts F_i as positives, averaging the log-probabilities over
    {p} + F_i with the full denominator (as the authors' released code does)::

        eliminate: loss_i = -log( e^{s_ip/t} / sum_{j != i, j not in F_i} e^{s_ij/t} )
        attract:   loss_i = -1/(1 + k) sum_{f in {p} + F_i} log( e^{s_if/t} / sum_{j != i} e^{s_ij/t} )

    Args:
        z1, z2: (N, D) projections of the two views.
        temperature: t > 0.
        k: false negatives per anchor, from 1 to 2N - 3 (at least one negative must remain).
        attract: attraction instead of elimination.
    """
    valid, rule = HP_RULES["fne_k"]
    require(valid(k), "fne_k", k, rule)
    k = int(k)
    n2 = 2 * z1.shape[0]
    require(k <= n2 - 3, "fne_k", k,
            f"must leave at least one negative: a batch of {n2 // 2} images gives each anchor {n2 - 2} negatives")
    with torch.autocast(z1.device.type, enabled=False):
        sim, pos = pair_logits(z1, z2, temperature)
        false_neg = top_k_negatives(sim, pos, k)
        self_mask = torch.eye(n2, dtype=torch.bool, device=sim.device)
        if not attract:
            return F.cross_entropy(sim.masked_fill(self_mask | false_neg, float("-inf")), pos)
        logp = sim.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)  # (2N, 2N)
        targets = false_neg.scatter(1, pos[:, None], True)  # {p} + F_i: 1 + k per row
        return -(torch.where(targets, logp, 0.0).sum(dim=1) / (1 + k)).mean()
