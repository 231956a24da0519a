"""weaver-core state_dicts -> NNX ParT: the reference arrays of shared/anchors are reproduced."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reco.models.part import PartConfig, ParticleTransformer
from reco.models.part_import import load_weaver_state_dict

ANCHOR = Path(__file__).parents[2].parent / "shared" / "anchors" / "part_reference_small.npz"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    if not ANCHOR.exists():
        pytest.skip(f"reference arrays not found at {ANCHOR}")
    with np.load(ANCHOR) as d:
        return {k: d[k] for k in d.files}


def _config(ref: dict[str, np.ndarray], classic: bool) -> PartConfig:
    c = json.loads(str(ref["meta/json"]))["config"]
    assert c["pair_input_dim"] == 4 and not c["use_pre_activation_pair"] and c["fc_params"] == []
    return PartConfig(
        embed_dims=tuple(c["embed_dims"]),
        pair_embed_dims=tuple(c["pair_embed_dims"]),
        num_heads=c["num_heads"],
        num_layers=c["num_layers"],
        num_cls_layers=c["num_cls_layers"],
        classic_head_layout=classic,
    )


def _state_dict(ref: dict[str, np.ndarray], version: str) -> dict[str, np.ndarray]:
    """The reference weights (0.5.x names), renamed to 0.4.x names for version "0.4"."""
    sd = {k.removeprefix("param/"): v for k, v in ref.items() if k.startswith("param/")}
    if version == "0.4":
        sd = {k.replace("attn.in_proj.", "attn.in_proj_"): v for k, v in sd.items()}
    return sd


def _inputs(ref: dict[str, np.ndarray]) -> dict[str, jnp.ndarray]:
    # the reference is channels-first (N, F, P); the project is batch-first (B, P, F)
    return {
        "particles": jnp.asarray(ref["in/features"].transpose(0, 2, 1)),
        "particles_mask": jnp.asarray(ref["in/mask"][:, 0] > 0),
        "vectors": jnp.asarray(ref["in/vectors"].transpose(0, 2, 1)),
    }


@functools.partial(jax.jit, static_argnums=0)
def _eval_jit(graphdef, state, batch):
    return nnx.merge(graphdef, state).intermediates(batch, train=False)


def _eval(model: ParticleTransformer, batch: dict) -> dict[str, jax.Array]:
    """Eval-mode intermediates, jitted (eager NNX is slow for a whole network)."""
    return _eval_jit(*nnx.split(model), batch)


def _imported(ref, version: str) -> ParticleTransformer:
    model = ParticleTransformer(_config(ref, version == "0.4"), 17, 10, rngs=nnx.Rngs(0))
    load_weaver_state_dict(model, _state_dict(ref, version), version)
    return model


@pytest.mark.parametrize(("version", "key"), [("0.4", "out/logits_classic"), ("0.5", "out/logits")])
def test_reproduces_reference_logits(ref, version, key):
    out = _eval(_imported(ref, version), _inputs(ref))
    np.testing.assert_allclose(out["logits"], ref[key], rtol=0, atol=1e-5)
    # the two layouts really differ (the README quotes a 4.0 max logit difference)
    other = "out/logits" if key == "out/logits_classic" else "out/logits_classic"
    assert np.abs(np.asarray(out["logits"]) - ref[other]).max() > 0.1


def test_reproduces_reference_intermediates(ref):
    out = _eval(_imported(ref, "0.5"), _inputs(ref))
    real = ref["in/mask"][:, 0] > 0  # (N, P)
    pairs = real[:, None, :, None] & real[:, None, None, :]  # (N, 1, P, P)
    # padded slots are zeroed before the pair features (the reference holds wrap copies there)
    fts = np.asarray(out["pair_fts"]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(fts * pairs, ref["out/pair_fts"] * pairs, rtol=0, atol=2e-5)
    bias = np.asarray(out["pair_bias"])
    np.testing.assert_allclose(bias * pairs, ref["out/pair_bias"] * pairs, rtol=0, atol=1e-5)
    assert not np.any(bias[~np.broadcast_to(pairs, bias.shape)])  # 0 wherever a particle is padding
    for name in ("embed", "block0", "block1", "block2", "block3"):
        got, want = np.asarray(out[name])[real], ref[f"out/{name}"][real]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5, err_msg=name)
    np.testing.assert_allclose(out["cls"], ref["out/cls_final"], rtol=0, atol=1e-5)


def test_running_statistics_are_imported(ref):
    model = _imported(ref, "0.5")
    np.testing.assert_array_equal(
        model.embed.input_bn.var[...], ref["param/embed.input_bn.running_var"]
    )
    assert model.pair_embed is not None
    np.testing.assert_array_equal(
        model.pair_embed.norms[3].mean[...], ref["param/pair_embed.embed.11.running_mean"]
    )
    np.testing.assert_array_equal(  # Conv1d (out, in, 1) -> kernel (in, out)
        model.pair_embed.layers[0].kernel[...], ref["param/pair_embed.embed.1.weight"][..., 0].T
    )


def test_unknown_and_missing_keys_are_listed(ref):
    model = ParticleTransformer(_config(ref, False), 17, 10, rngs=nnx.Rngs(0))
    sd = _state_dict(ref, "0.5")
    sd["blocks.9.fc1.weight"] = np.zeros((1,), np.float32)
    del sd["cls_blocks.1.w_resid"]
    with pytest.raises(ValueError, match=r"blocks\.9\.fc1\.weight.*cls_blocks\.1\.w_resid"):
        load_weaver_state_dict(model, sd, "0.5")
    with pytest.raises(ValueError, match="missing keys.*in_proj_weight"):  # 0.5 names, 0.4 asked
        load_weaver_state_dict(
            ParticleTransformer(_config(ref, True), 17, 10, rngs=nnx.Rngs(0)),
            _state_dict(ref, "0.5"),
            "0.4",
        )


def test_shape_and_layout_mismatches_are_errors(ref):
    with pytest.raises(ValueError, match="classic_head_layout=True"):
        model = ParticleTransformer(_config(ref, False), 17, 10, rngs=nnx.Rngs(0))
        load_weaver_state_dict(model, _state_dict(ref, "0.4"), "0.4")
    model = ParticleTransformer(_config(ref, False), 17, 3, rngs=nnx.Rngs(0))  # 3 classes, not 10
    before = np.asarray(model.cls_token[...]).copy()
    with pytest.raises(ValueError, match=r"fc\.0\.weight: shape"):
        load_weaver_state_dict(model, _state_dict(ref, "0.5"), "0.5")
    np.testing.assert_array_equal(model.cls_token[...], before)  # nothing half-loaded
