"""Shared test configs: tiny set models (ParT, the station transformer) that compile fast."""

from __future__ import annotations

from reco.models.part import PartConfig
from reco.models.set_transformer import SetTransformerConfig

TINY_PART = PartConfig(
    embed_dims=(16, 32, 16),
    pair_embed_dims=(8, 8),
    num_heads=2,
    num_layers=2,
    num_cls_layers=1,
    dropout=0.0,
    attn_dropout=0.0,
    activation_dropout=0.0,
    # every pair embedded: compiles in half the time; test_real_pairs_only_give_the_dense_result
    # shows that the packed real pairs (the default) give the same outputs and gradients
    pair_buckets=0,
)

TINY_STATIONS = SetTransformerConfig(
    embed_dims=(16,),
    positional_width=8,
    trace_channels=(4, 8),
    num_heads=2,
    num_layers=1,
    num_cls_layers=1,
    ffn_ratio=2,
    dropout=0.0,
    pair_embed_dims=(8,),
)
