"""Image-text matching models on precomputed features.

- Image side: one global vector ``(n, d)`` or a set of region/grid vectors ``(n, r, d)``, each
  projected to the joint space and pooled by GPO (VSE∞'s generalized pooling operator), mean or
  max.
- Text side: a global vector ``(n, d)``, token vectors from a frozen encoder ``(n, L, d)`` with
  their lengths (projected, then pooled), or word ids ``(n, L)`` through a word embedding and a
  bidirectional GRU (VSE++/VSE∞ text encoder).
- "Heads only" (LiT-style): both sides are frozen dual-encoder embeddings ``(n, d)``; only the
  projection heads are trained, optionally initialised at the identity so training starts from
  the pretrained joint space.

Outputs are L2-normalised joint embeddings (the VSE convention: similarities are cosines).

References
----------
Chen, Deng, Li, Wang, Wang. *Learning the Best Pooling Strategy for Visual Semantic Embedding*
(VSE∞). CVPR 2021. Zhai et al. *LiT: Zero-Shot Transfer with Locked-image text Tuning*. CVPR 2022.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModgapError

__all__ = [
    "GPO",
    "POOLINGS",
    "FeatureEncoder",
    "MatchingModel",
    "WordGRUEncoder",
    "pool_features",
]

POOLINGS = ("gpo", "mean", "max")


def _lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(n, max_len)`` boolean mask of valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def positional_encoding(d: int, length: int, device=None) -> torch.Tensor:
    """Sinusoidal positional encoding ``(length, d)`` (Vaswani et al. 2017), positions 1..L."""
    pos = torch.arange(1, length + 1, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(
        torch.arange(0, d, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d)
    )
    pe = torch.zeros(length, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class GPO(nn.Module):
    r"""Generalized pooling operator (VSE∞, Chen et al. 2021).

    Each of the ``D`` dimensions is sorted over the ``K`` valid features in decreasing order and
    pooled with weights :math:`\theta_k` that depend only on the rank ``k`` and on ``K``:

    .. math::

        f_d = \sum_{k=1}^{K} \theta_k \, \mathrm{sort}_\downarrow(x_{1..K,d})_k,\qquad
        \theta = \mathrm{softmax}(g(\mathrm{PE}(1..K)) / 0.1),

    ``g`` a small bidirectional GRU over sinusoidal positional encodings followed by a linear
    scorer. Max pooling (θ = e₁) and mean pooling (θ = 1/K) are special cases.
    """

    def __init__(self, d_pe: int = 32, d_hidden: int = 32):
        super().__init__()
        self.d_pe = d_pe
        self.gru = nn.GRU(d_pe, d_hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(d_hidden, 1, bias=False)

    def weights(self, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
        """Pooling weights ``(n, max_len, 1)`` (zero on padded positions).

        The weights depend only on the number of valid features, so the GRU runs once per
        distinct length in the batch, not once per sample.
        """
        uniq, inverse = torch.unique(lengths.clamp(min=1), return_inverse=True)
        u = uniq.shape[0]
        pe = positional_encoding(self.d_pe, max_len, lengths.device)
        mask = _lengths_mask(uniq, max_len)
        pes = pe[None].expand(u, -1, -1) * mask[..., None]
        if u == 1 and int(uniq[0]) == max_len:
            out, _ = self.gru(pes)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                pes, uniq.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.gru(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=max_len)
        half = out.shape[-1] // 2
        scores = self.linear((out[..., :half] + out[..., half:]) / 2)
        scores = scores.masked_fill(~mask[..., None], -1e4)
        return torch.softmax(scores / 0.1, dim=1)[inverse]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _n, k, _ = x.shape
        mask = _lengths_mask(lengths, k)[..., None]
        sorted_x = x.masked_fill(~mask, -1e4).sort(dim=1, descending=True).values
        sorted_x = sorted_x.masked_fill(~mask, 0.0)
        return (sorted_x * self.weights(lengths, k)).sum(1)


def pool_features(x: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Mean or max of ``x (n, k, d)`` over its ``lengths`` valid positions."""
    mask = _lengths_mask(lengths, x.shape[1])[..., None]
    if how == "mean":
        return (x * mask).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)
    if how == "max":
        return x.masked_fill(~mask, float("-inf")).max(1).values
    raise ModgapError(f"unknown pooling {how!r} (choose from {', '.join(POOLINGS)})")


class _Pool(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        if how not in POOLINGS:
            raise ModgapError(f"unknown pooling {how!r} (choose from {', '.join(POOLINGS)})")
        self.how = how
        self.gpo = GPO() if how == "gpo" else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.gpo is not None:
            return self.gpo(x, lengths)
        return pool_features(x, lengths, self.how)


class FeatureEncoder(nn.Module):
    """Projection of precomputed features to the joint space (either modality).

    Accepts ``(n, d)`` global vectors or ``(n, k, d)`` sets (regions, grid cells, tokens) with
    optional ``lengths`` ``(n,)``; sets are projected per element, then pooled.

    Parameters
    ----------
    in_dim, joint_dim : int
        Feature and joint-space widths.
    head : {"linear", "mlp"}
        Projection: one linear map, or linear + a 2-layer MLP residual branch (VSE∞ image head).
    pooling : {"gpo", "mean", "max"}
        Pooling of sets.
    identity_init : bool
        Start the linear map at the identity (needs ``in_dim == joint_dim``); with the heads-only
        mode training then starts from the frozen encoders' joint space.
    """

    def __init__(
        self,
        in_dim: int,
        joint_dim: int,
        head: str = "linear",
        pooling: str = "gpo",
        identity_init: bool = False,
    ):
        super().__init__()
        if head not in ("linear", "mlp"):
            raise ModgapError(f"unknown head {head!r} (choose from linear, mlp)")
        if identity_init and in_dim != joint_dim:
            raise ModgapError(
                f"identity_init needs the feature width ({in_dim}) to equal joint_dim ({joint_dim})"
            )
        self.fc = nn.Linear(in_dim, joint_dim)
        if identity_init:
            with torch.no_grad():
                self.fc.weight.copy_(torch.eye(joint_dim))
                self.fc.bias.zero_()
        else:
            # Xavier as in VSE++'s image encoder
            r = math.sqrt(6.0) / math.sqrt(in_dim + joint_dim)
            nn.init.uniform_(self.fc.weight, -r, r)
            nn.init.zeros_(self.fc.bias)
        self.mlp = None
        if head == "mlp":
            hidden = joint_dim // 2
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.LayerNorm(hidden),
                nn.ReLU(),
                nn.Linear(hidden, joint_dim),
            )
            # the residual branch starts silent so identity_init stays exact at step 0
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        self.pool = _Pool(pooling)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(x)
        if self.mlp is not None:
            h = h + self.mlp(x)
        if h.dim() == 3:
            if lengths is None:
                lengths = torch.full((h.shape[0],), h.shape[1], dtype=torch.long, device=h.device)
            h = self.pool(h, lengths)
        return F.normalize(h.float(), dim=-1)


class WordGRUEncoder(nn.Module):
    """Word ids -> word embeddings -> bidirectional GRU -> pooled joint vector (VSE∞ BiGRU).

    The two directions are averaged at each position, then pooled over the caption's length.
    """

    def __init__(
        self,
        vocab_size: int,
        joint_dim: int,
        word_dim: int = 300,
        num_layers: int = 1,
        pooling: str = "gpo",
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.gru = nn.GRU(word_dim, joint_dim, num_layers, batch_first=True, bidirectional=True)
        self.pool = _Pool(pooling)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        half = out.shape[-1] // 2
        h = (out[..., :half] + out[..., half:]) / 2
        return F.normalize(self.pool(h, lengths).float(), dim=-1)


class MatchingModel(nn.Module):
    """Image encoder + text encoder into one joint space.

    ``encode_images(x, lengths=None)`` and ``encode_texts(x, lengths=None)`` return
    L2-normalised ``(n, joint_dim)`` tensors. Frozen modules (``freeze_image``/``freeze_text``)
    keep their initial weights (LiT locks the image tower).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        freeze_image: bool = False,
        freeze_text: bool = False,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        for module, frozen in ((image_encoder, freeze_image), (text_encoder, freeze_text)):
            for p in module.parameters():
                p.requires_grad_(not frozen)

    def encode_images(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.image_encoder(x, lengths)

    def encode_texts(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.text_encoder(x, lengths)

    def forward(self, images, texts, image_lengths=None, text_lengths=None):
        return self.encode_images(images, image_lengths), self.encode_texts(texts, text_lengths)
