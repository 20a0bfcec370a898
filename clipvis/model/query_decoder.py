"""Masked-attention transformer decoder (Mask2Former) with CLIP-VIS's object, mask and mask-IoU heads.

Learnable queries attend, layer by layer, to the pixel decoder's stride-32, 16 and 8 maps in turn; each
query only sees the pixels inside the mask predicted for it before that layer. Heads read the normalised
queries before the first layer and after every layer.

Parameter names follow the authors' released decoder, so their checkpoints load into this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.model.position_encoding import PositionEmbeddingSine

NUM_LEVELS = 3


def _xavier_init(module: nn.Module) -> None:
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class CrossAttentionBlock(nn.Module):
    """Queries attend to one feature level; residual + LayerNorm."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier_init(self)

    def forward(self, queries, query_pos, memory, memory_pos, blocked):
        """queries, query_pos (B, Q, C); memory, memory_pos (B, HW, C); blocked (B·heads, Q, HW) bool."""
        attended = self.multihead_attn(
            queries + query_pos, memory + memory_pos, memory, attn_mask=blocked, need_weights=False
        )[0]
        return self.norm(queries + attended)


class SelfAttentionBlock(nn.Module):
    """Queries attend to each other; residual + LayerNorm."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier_init(self)

    def forward(self, queries, query_pos):
        """queries, query_pos (B, Q, C)."""
        with_pos = queries + query_pos
        return self.norm(queries + self.self_attn(with_pos, with_pos, queries, need_weights=False)[0])


class FeedForwardBlock(nn.Module):
    """Two linear layers with ReLU; residual + LayerNorm."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        _xavier_init(self)

    def forward(self, queries):
        return self.norm(queries + self.linear2(F.relu(self.linear1(queries), inplace=True)))


class MLP(nn.Module):
    """Three linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out_dim)])

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x), inplace=True)
        return self.layers[-1](x)


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of features (B, C, H, W) over each binarised mask (logit > 0) (B, Q, H, W) → (B, Q, C).

    An empty mask gives zeros; no gradient flows through the masks.
    """
    masks = (mask_logits.detach() > 0).to(features.dtype)
    areas = masks.sum(dim=(-2, -1)).clamp(min=1.0)  # (B, Q)
    return torch.einsum("bchw,bqhw->bqc", features, masks) / areas.unsqueeze(-1)


class QueryDecoder(nn.Module):
    """Mask2Former's multi-scale masked-attention decoder with object, mask and IoU heads.

    ``layers`` is the number of decoder layers (the config's DEC_LAYERS − 1); it must match a checkpoint.
    ``iou_head_input``: "query" (the paper's choice) feeds the normalised query to the IoU head, "pooled"
    feeds the mask-pooled ``mask_features`` (Table IV a). ``iou_activation``: "sigmoid" or "relu" (Table IV b).
    """

    def __init__(
        self,
        hidden_dim: int = 256,
        num_queries: int = 100,
        heads: int = 8,
        ffn_dim: int = 2048,
        layers: int = 9,
        mask_dim: int = 256,
        iou_head_input: str = "query",
        iou_activation: str = "sigmoid",
    ):
        super().__init__()
        if iou_head_input not in ("query", "pooled"):
            raise ValueError(f"iou_head_input must be 'query' or 'pooled', not {iou_head_input!r}")
        if iou_activation not in ("sigmoid", "relu"):
            raise ValueError(f"iou_activation must be 'sigmoid' or 'relu', not {iou_activation!r}")
        self.heads = heads
        self.num_layers = layers
        self.iou_head_input = iou_head_input
        self.iou_activation = torch.sigmoid if iou_activation == "sigmoid" else F.relu

        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(NUM_LEVELS, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionBlock(hidden_dim, heads) for _ in range(layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionBlock(hidden_dim, heads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FeedForwardBlock(hidden_dim, ffn_dim) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.object_embed = MLP(hidden_dim, hidden_dim, 2)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim)
        self.iou_head = MLP(hidden_dim if iou_head_input == "query" else mask_dim, hidden_dim, 1)

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        with_aux: bool | None = None,
    ) -> dict:
        """Decode queries.

        multi_scale_features: [s32, s16, s8] maps, each (B, hidden, h, w); mask_features (B, mask_dim, H/4, W/4).
        Returns ``pred_object_logits`` (B, Q, 2; index 0 = object), ``pred_ious`` (B, Q, 1), ``pred_masks``
        (B, Q, H/4, W/4) logits, ``pred_embds`` (B, Q, hidden), and with ``with_aux`` (default: in training)
        ``aux_outputs``, the ``layers`` earlier prediction sets.
        """
        if len(multi_scale_features) != NUM_LEVELS:
            raise ValueError(f"expected {NUM_LEVELS} feature levels, got {len(multi_scale_features)}")
        with_aux = self.training if with_aux is None else with_aux

        memories, memory_pos, level_mask_features = [], [], []
        for level, features in enumerate(multi_scale_features):
            memories.append(features.flatten(2).transpose(1, 2) + self.level_embed.weight[level])  # (B, hw, C)
            memory_pos.append(self.pe_layer(features).flatten(2).transpose(1, 2).to(features.dtype))
            # Resizing is linear, so masks of the resized features equal resized masks: attention masks
            # cost a fraction of full-resolution masks.
            level_mask_features.append(
                F.interpolate(mask_features, size=features.shape[-2:], mode="bilinear", align_corners=False)
            )

        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        aux_outputs = []
        for i in range(self.num_layers):
            level = i % NUM_LEVELS
            normed = self.decoder_norm(queries)
            mask_embed = self.mask_embed(normed)
            if with_aux:
                aux_outputs.append(self.predict(normed, mask_embed, mask_features))
            blocked = self.attention_mask(mask_embed, level_mask_features[level])
            queries = self.transformer_cross_attention_layers[i](
                queries, query_pos, memories[level], memory_pos[level], blocked
            )
            queries = self.transformer_self_attention_layers[i](queries, query_pos)
            queries = self.transformer_ffn_layers[i](queries)

        normed = self.decoder_norm(queries)
        outputs = self.predict(normed, self.mask_embed(normed), mask_features)
        outputs["pred_embds"] = normed
        if with_aux:
            outputs["aux_outputs"] = aux_outputs
        return outputs

    def predict(self, normed: torch.Tensor, mask_embed: torch.Tensor, mask_features: torch.Tensor) -> dict:
        """One prediction set from normalised queries (B, Q, C) and their mask embeddings (B, Q, mask_dim)."""
        masks = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        iou_input = normed if self.iou_head_input == "query" else mask_pool(mask_features, masks)
        return {
            "pred_object_logits": self.object_embed(normed),
            "pred_ious": self.iou_activation(self.iou_head(iou_input)),
            "pred_masks": masks,
        }

    @torch.no_grad()
    def attention_mask(self, mask_embed: torch.Tensor, level_features: torch.Tensor) -> torch.Tensor:
        """Positions each query may not attend to: (B·heads, Q, h·w) bool, True = blocked.

        Blocked where the predicted mask at this level has sigmoid < 0.5; a query blocked everywhere is
        let through everywhere instead.
        """
        logits = torch.einsum("bqc,bchw->bqhw", mask_embed, level_features).flatten(2)  # (B, Q, hw)
        blocked = logits.sigmoid() < 0.5
        blocked &= ~blocked.all(dim=-1, keepdim=True)
        return blocked.repeat_interleave(self.heads, dim=0)
