"""
instruments.py: the Fourier progress measures of Nanda et al. (2023), "Progress measures for
grokking via mechanistic interpretability" (ICLR 2023), for experiment.py's x_plus_y and x_minus_y
units. experiment.py imports it only when --progress_every > 0; no idea needs to edit it, and it
never imports experiment.py.

Definitions (p the prime, w_k = 2 pi k / p for the frequencies k = 1 .. (p - 1) / 2):
- Fourier basis F (p x p, `fourier_basis`): row 0 the constant 1 / sqrt(p); rows 2k - 1 and 2k
  cos(w_k x) and sin(w_k x), each scaled to unit norm. Orthonormal (F F^T = I), the rows in the
  order of Nanda et al.'s code.
- Embedding norm per frequency (`frequency_norms`): E = the token embedding's rows of the p
  numbers (experiment.py's token ids 2 .. p + 1; the 2 special tokens are left out), C = F E;
  norm_k = sqrt(|C_{2k-1}|^2 + |C_{2k}|^2), the cos and sin components together (their Figure 3).
- Logits L (p^2 x p): the model's logits at the last position for every pair (a, b) (row a p + b),
  train and validation pairs together, in float64.
- Sum directions: u_k = cos(w_k (a + b)), v_k = sin(w_k (a + b)) as vectors over the p^2 pairs,
  each normalised (all orthonormal); for x_minus_y, a - b. They are the directions
  (cos_a cos_b -+ sin_a sin_b) / sqrt 2 and (sin_a cos_b +- cos_a sin_b) / sqrt 2 of the 2D Fourier
  basis in Nanda et al.'s code (get_component_cos_xpy / get_component_sin_xpy).
- Logit norm per frequency (`logit_frequency_norms`): n_k = sqrt(sum over output classes c of
  (u_k . L_c)^2 + (v_k . L_c)^2), how much of the logits varies with frequency k of a + b.
- Key frequencies (`key_frequencies`): every k with n_k >= max_j n_j / KEY_RATIO (4), from the
  current logits at each record. The ratio is the one of Nanda's TransformerLens grokking demo
  (which applies it to the embedding); the paper gives no number: its appendix C.2 takes "the
  frequencies with nontrivial coefficients" of the DFT of the neuron-logit map W_L, i.e. from the
  output side, as here, and fixes the final model's set for every checkpoint (`ProgressMeasures`
  takes any fixed set through `keys`, e.g. the final one for saved checkpoints). The embedding is
  not a usable source in this model: x_plus_y seed 1338 after 3000 updates (grokked at 1890) has
  all 48 frequencies above a quarter of the largest embedding norm (its top 6 carry 24% of the
  squared norm), while 6 frequencies {18, 21, 27, 30, 32, 34}, the embedding's top 6, carry 97%
  of the logits' energy along the sum directions (and 79% of the head's norm over classes), with
  the 7th at 0.4%.
- P = the sum over key k of u_k u_k^T + v_k v_k^T, applied to each output column of L.
- restricted_loss: cross-entropy (float64) over all p^2 pairs of the logits kept only along the
  key directions, plus the constant term: P L + mean over pairs of (L - P L) (their "bias
  correction"; the paper: "set all terms besides the constant term and the [...] terms
  corresponding to cos(w_k(a+b)) and sin(w_k(a+b)) [...] to 0"). Their code reports it on all
  pairs (mode='all'), as here.
- excluded_loss: cross-entropy (float64) over the TRAIN pairs of L - P L, all key frequencies
  removed at once (the paper's "full excluded loss"; its code also has a per-frequency variant).
- key_embedding_share: sum of norm_k^2 over the key frequencies / |E|^2 (the constant component in
  the denominator); key_logit_share: sum of n_k^2 over the key frequencies / |L - mean over pairs|^2,
  the fraction of the logits' variance over inputs that the key frequencies' sum directions carry
  (Nanda et al. report 95% for cos(w_k(a+b-c)) terms).

Expected (their section 5.2): during memorisation the excluded loss falls with the train loss and
the restricted loss stays high; during circuit formation the excluded loss rises and the restricted
loss falls while train and test loss stay flat; at clean-up the test loss drops.
"""
import math

import torch
import torch.nn.functional as F


KEY_RATIO = 4.0  # key frequency: n_k >= max_j n_j / KEY_RATIO


def fourier_basis(p, dtype=torch.float64, device=None):
    """The orthonormal Fourier basis of R^p (p odd) as rows: constant, then cos k, sin k for
    k = 1 .. (p - 1) / 2. Angles from (k x) mod p, exact in integers."""
    x = torch.arange(p, device=device)
    rows = [torch.ones(p, dtype=dtype, device=device)]
    for k in range(1, (p - 1) // 2 + 1):
        angle = 2 * math.pi * ((k * x) % p).to(dtype) / p
        rows += [torch.cos(angle), torch.sin(angle)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def frequency_norms(embedding, basis):
    """(norm_k for k = 1 .. (p - 1) / 2, |E|^2) of the (p, d) embedding rows of the p numbers."""
    squares = (basis @ embedding.to(basis.dtype)).pow(2).sum(dim=1)  # per basis row
    return (squares[1::2] + squares[2::2]).sqrt(), squares.sum()


def logit_frequency_norms(logits, directions):
    """n_k for k = 1 .. (p - 1) / 2 of float64 logits (p^2, p), directions (K, 2, p^2) from
    `sum_directions`, and |L - mean over pairs|^2."""
    coefficients = torch.einsum("kip,pc->kic", directions, logits)  # the directions have mean 0
    centred = logits - logits.mean(dim=0, keepdim=True)
    return coefficients.pow(2).sum(dim=(1, 2)).sqrt(), centred.pow(2).sum()


def key_frequencies(norms, ratio=KEY_RATIO):
    """Frequencies k (1-based) with norms[k - 1] >= max norm / ratio, in increasing order."""
    return [k + 1 for k, n in enumerate(norms.tolist()) if n >= norms.max().item() / ratio]


def sum_directions(p, sign=1, dtype=torch.float64, device=None):
    """(K, 2, p^2): for each frequency k = 1 .. K = (p - 1) / 2, the unit vectors cos(w_k (a +
    sign b)) and sin(w_k (a + sign b)) over the pairs in row order a p + b."""
    a, b = torch.arange(p, device=device).repeat_interleave(p), torch.arange(p, device=device).repeat(p)
    k = torch.arange(1, (p - 1) // 2 + 1, device=device)[:, None]
    angle = 2 * math.pi * ((k * (a + sign * b)[None]) % p).to(dtype) / p
    directions = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return directions / directions.norm(dim=-1, keepdim=True)


def ablated_losses(logits, labels, train, directions):
    """(restricted loss over all pairs, excluded loss over the train pairs) of float64 logits
    (p^2, p), given the key directions (n, p^2) (orthonormal rows)."""
    kept = directions.T @ (directions @ logits)  # P L
    restricted = kept + (logits - kept).mean(dim=0, keepdim=True)
    excluded = logits - kept
    return (F.cross_entropy(restricted, labels).item(),
            F.cross_entropy(excluded[train], labels[train]).item())


class ProgressMeasures:
    """The progress measures of one unit, measured on the whole (a, b) grid.

    tokens (p^2, T) the model's input for every pair in row order a p + b, labels (p^2,), train
    (p^2,) bool, sign +1 (x_plus_y) or -1 (x_minus_y), rows: the slice of token ids of the p
    numbers in the embedding."""

    def __init__(self, p, tokens, labels, train, sign, rows, batch_size=1024):
        self.p, self.tokens, self.labels, self.train = p, tokens, labels.cpu(), train.cpu()
        self.rows, self.batch_size = rows, batch_size
        self.basis = fourier_basis(p)  # the Fourier arithmetic runs on the CPU in float64 (which
        self.directions = sum_directions(p, sign)  # MPS lacks); the model on its own device

    @torch.no_grad()
    def logits(self, model, logits_fn):
        model.eval()
        logits = torch.cat([logits_fn(x).float().cpu() for x in self.tokens.split(self.batch_size)])
        model.train()
        return logits.double()

    def __call__(self, model, logits_fn, keys=None):
        """{"restricted_loss", "excluded_loss", "key_embedding_share", "key_logit_share",
        "key_frequencies" (list), "fourier_norms" (list: the embedding's norm_k), "logit_fourier_norms"
        (list: n_k)}, k = 1 .. (p - 1) / 2; keys: a fixed set of key frequencies (default: the
        current logits', by `key_frequencies`)."""
        with torch.no_grad():
            embedding = model.token_embedding.weight[self.rows].detach().float().cpu()
            norms, total = frequency_norms(embedding, self.basis)
            logits = self.logits(model, logits_fn)
            logit_norms, logit_total = logit_frequency_norms(logits, self.directions)
        keys = key_frequencies(logit_norms) if keys is None else sorted(keys)
        index = [k - 1 for k in keys]
        restricted, excluded = ablated_losses(logits, self.labels, self.train,
                                              self.directions[index].reshape(-1, self.p * self.p))
        return {"restricted_loss": restricted, "excluded_loss": excluded,
                "key_embedding_share": (norms[index].pow(2).sum() / total).item(),
                "key_logit_share": (logit_norms[index].pow(2).sum() / logit_total).item(),
                "key_frequencies": keys, "fourier_norms": norms.tolist(),
                "logit_fourier_norms": logit_norms.tolist()}
