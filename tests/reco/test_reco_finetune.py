"""Fine-tuning: initialising from a pre-trained checkpoint, the head's learning rate, lineage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline.config import ConfigError, to_dict
from pipeline.tracking import DictTracker
from reco.checkpoint import Checkpoints, init_from_checkpoint, load_for_inference, read_meta
from reco.models import build_model
from reco.models.cnn import CNNConfig
from reco.models.part_import import strip_wrappers
from reco.models.pfn import PFNConfig
from reco.optim import make_optimizer
from reco.state import TrainState, head_modules, in_head, split_model
from reco.tasks import TaskConfig
from reco.train import TrainConfig
from reco.train import fit as reco_fit

ROOT = Path(__file__).resolve().parents[2]
ANCHOR = ROOT.parent / "shared" / "anchors" / "part_reference_small.npz"
SPEC = {"image": (11, 11, 3)}
TASK = to_dict(TaskConfig())
X = {"image": np.random.default_rng(3).normal(size=(4, 11, 11, 3)).astype(np.float32)}


def fit(model_cfg, train_cfg, train, val, stats, run_dir, **kw):
    config = {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "seed": 0}
    return reco_fit(
        model_cfg,
        TaskConfig(),
        train_cfg,
        train,
        val,
        stats,
        run_dir,
        kw.pop("tracker", None) or DictTracker(),
        seed=kw.pop("seed", 0),
        config_dict=config,
        progress=False,
        **kw,
    )


def flat(model: nnx.Module, kind: type = nnx.Variable) -> dict[str, np.ndarray]:
    """``{"a.b.c": value}`` of the model's variables of ``kind``, RNG streams left out."""
    return {
        ".".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(nnx.state(model, kind))
        if not isinstance(var, nnx.RngState)
    }


def save_source(run_dir: Path, cfg: CNNConfig, spec=SPEC, n_outputs: int = 1, task=TASK) -> Path:
    """A checkpoint as ``fit`` writes it, of a model whose every parameter and BatchNorm
    statistic was moved away from its initial value (so that every copy is visible)."""
    model = build_model(cfg, spec, n_outputs, seed=0)
    _, params, rest = split_model(model)
    keys = iter(jax.random.split(jax.random.key(42), 1000))

    def perturb(x: jax.Array) -> jax.Array:
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) or x.dtype.kind in "iu":
            return x
        return jnp.abs(x + 0.3 * jax.random.normal(next(keys), x.shape, x.dtype) + 0.1)

    meta = {
        "model": to_dict(cfg),
        "task": task,
        "input_spec": {k: list(v) for k, v in spec.items()},
        "n_outputs": n_outputs,
        "seed": 0,
        "epoch": 3,
        "step": 12,
        "val_loss": 0.5,
    }
    state = TrainState(
        jnp.zeros((), jnp.int32), jax.tree.map(perturb, params), jax.tree.map(perturb, rest), ()
    )
    ckpt = Checkpoints(run_dir / "checkpoints")
    try:
        ckpt.save("best", state, meta, {}, {})
    finally:
        ckpt.close()
    return run_dir


@pytest.fixture
def source(tiny_cnn, tmp_path) -> Path:
    return save_source(tmp_path / "source", tiny_cnn)


# ------------------------------------------------------------------------------------------------
# what is copied


def test_keep_reproduces_the_source_model_exactly(tiny_cnn, source):
    model = build_model(tiny_cnn, SPEC, 1, seed=7)
    record = init_from_checkpoint(model, tiny_cnn, source, "keep", TASK)
    reference, _, _ = load_for_inference(source)
    np.testing.assert_array_equal(model(X, train=False), reference(X, train=False))
    assert record["checkpoint"] == read_meta(source)["path"]
    assert (record["init_head"], record["reinitialised"], record["epoch"]) == ("keep", [], 3)
    assert record["copied"] == len(flat(reference))


def test_replace_copies_everything_but_the_head(tiny_cnn, source):
    model = build_model(tiny_cnn, SPEC, 1, seed=7)
    fresh = flat(build_model(tiny_cnn, SPEC, 1, seed=7))
    record = init_from_checkpoint(model, tiny_cnn, source, "replace", TASK)
    got, want = flat(model), flat(load_for_inference(source)[0])
    head = head_modules(model)
    assert head == ("head", "out")
    head_names = sorted(k for k in got if k.split(".")[0] in head)
    assert (
        head_names
        == record["reinitialised"]
        == [
            "head.0.bias",
            "head.0.kernel",
            "out.bias",
            "out.kernel",
        ]
    )
    for name, value in got.items():
        if name in head_names:  # this run's own initialisation (seed 7), not the source's
            np.testing.assert_array_equal(value, fresh[name])
            assert not np.array_equal(value, want[name]), name
        else:
            np.testing.assert_array_equal(value, want[name], err_msg=name)


def test_batchnorm_statistics_are_copied(tiny_cnn, source):
    model = build_model(tiny_cnn, SPEC, 1, seed=7)
    init_from_checkpoint(model, tiny_cnn, source, "replace", TASK)
    stats = flat(model, nnx.BatchStat)
    want = flat(load_for_inference(source)[0], nnx.BatchStat)
    assert stats.keys() == want.keys() and "stem_norm.norm.mean" in stats
    for name, value in stats.items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
        assert not np.array_equal(value, np.zeros_like(value)) and not np.all(value == 1.0)


def test_replace_allows_a_new_head_of_another_shape(tiny_cnn, source):
    cfg = dataclasses.replace(tiny_cnn, head_widths=(16, 4))
    model = build_model(cfg, SPEC, 3, seed=1)
    record = init_from_checkpoint(model, cfg, source, "replace", TASK)
    assert record["model_differences"] == {"head_widths": [[8], [16, 4]]}
    np.testing.assert_array_equal(
        flat(model)["stem.kernel"], flat(load_for_inference(source)[0])["stem.kernel"]
    )
    assert model(X, train=False).shape == (4, 3)


# ------------------------------------------------------------------------------------------------
# what is refused


def test_keep_with_a_head_of_another_shape_names_it(tiny_cnn, source):
    model = build_model(tiny_cnn, SPEC, 2, seed=1)
    before = flat(model)
    with pytest.raises(ValueError, match="init_head=keep") as err:
        init_from_checkpoint(model, tiny_cnn, source, "keep", None)
    assert "out.kernel: checkpoint (8, 1), this model (8, 2)" in str(err.value)
    assert str(source) in str(err.value)
    for name, value in flat(model).items():  # nothing was copied
        np.testing.assert_array_equal(value, before[name])


def test_other_input_features_are_refused_with_paths_and_shapes(tiny_cnn, source):
    model = build_model(tiny_cnn, {"image": (11, 11, 5)}, 1, seed=1)
    with pytest.raises(ValueError, match=r"stem\.kernel: checkpoint \(3, 3, 3, 4\), this model "):
        init_from_checkpoint(model, tiny_cnn, source, "replace", TASK)


def test_missing_and_unknown_paths_are_listed(tiny_cnn, source):
    deeper = dataclasses.replace(tiny_cnn, widths=(4, 8, 8))
    with pytest.raises(ValueError) as err:
        init_from_checkpoint(build_model(deeper, SPEC, 1, 1), deeper, source, "replace", TASK)
    msg = str(err.value)
    assert "not in the checkpoint: ['blocks.2.conv1.kernel'" in msg
    assert "'widths': [[4, 8], [4, 8, 8]]" in msg
    shallower = dataclasses.replace(tiny_cnn, widths=(4,))
    with pytest.raises(ValueError, match=r"not in this model: \['blocks\.1\.conv1\.kernel'"):
        init_from_checkpoint(build_model(shallower, SPEC, 1, 1), shallower, source, "replace", TASK)


def test_another_architecture_is_refused(source):
    cfg = PFNConfig(phi_widths=(8,), f_widths=(8,))
    model = build_model(cfg, {"particles": (16, 3)}, 1, seed=0)
    with pytest.raises(ValueError, match="holds a 'cnn' model, this run builds 'pfn'"):
        init_from_checkpoint(model, cfg, source, "replace", TASK)


def test_keep_refuses_a_head_trained_for_another_task(tiny_cnn, source):
    other = to_dict(TaskConfig(targets=("xmax",)))
    model = build_model(tiny_cnn, SPEC, 1, seed=1)
    with pytest.raises(ValueError, match=r"targets \['log10_energy'\] in the checkpoint"):
        init_from_checkpoint(model, tiny_cnn, source, "keep", other)
    init_from_checkpoint(model, tiny_cnn, source, "replace", other)  # a new head is fine


def test_no_checkpoint_is_a_file_not_found(tiny_cnn, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        init_from_checkpoint(build_model(tiny_cnn, SPEC, 1, 0), tiny_cnn, tmp_path, "keep")


def test_train_config_validation():
    with pytest.raises(ValueError, match="head_lr_multiplier must be a positive"):
        TrainConfig(head_lr_multiplier=0.0)
    with pytest.raises(ValueError, match="head_lr_multiplier"):
        TrainConfig(head_lr_multiplier=float("nan"))
    with pytest.raises(ValueError, match="init_head must be 'replace' or 'keep'"):
        TrainConfig(init_head="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init_from must be a run folder"):
        TrainConfig(init_from=" ")


# ------------------------------------------------------------------------------------------------
# the head's learning rate


def _first_update(cfg: TrainConfig, params: dict, grads: dict, head=("out",)) -> dict:
    tx, _ = make_optimizer(cfg, total_steps=10, steps_per_epoch=5, head=head)
    updates, _ = tx.update(grads, tx.init(params), params, value=jnp.asarray(1.0))
    return updates


@pytest.mark.parametrize("optimizer", ["adamw", "ranger"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_head_learning_rate_is_the_multiplier_times_the_base(optimizer, weight_decay):
    params = {
        "stem": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.full((3,), 0.2)},
        "out": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.full((3,), 0.2)},
    }
    grads = {  # the same gradients in both groups
        k: {"kernel": jnp.linspace(-1.0, 2.0, 6).reshape(2, 3), "bias": jnp.array([0.3, -1, 2])}
        for k in params
    }
    base = TrainConfig(
        optimizer=optimizer,
        lr=1e-4,
        weight_decay=weight_decay,
        warmup_steps=0,
        schedule="constant",
        grad_clip=None,
    )
    tuned = _first_update(dataclasses.replace(base, head_lr_multiplier=50.0), params, grads)
    plain = _first_update(base, params, grads)
    faster = _first_update(dataclasses.replace(base, lr=50 * 1e-4), params, grads)
    for leaf in ("kernel", "bias"):
        # the backbone is untouched, the head moves as with a 50x learning rate (decay included)
        np.testing.assert_array_equal(tuned["stem"][leaf], plain["stem"][leaf])
        np.testing.assert_allclose(tuned["out"][leaf], faster["out"][leaf], rtol=1e-6, atol=1e-7)
        # ratio 50 (ranger's updates are differences of float32 weights: atol of a few ulp)
        np.testing.assert_allclose(
            tuned["out"][leaf], 50 * tuned["stem"][leaf], rtol=1e-6, atol=50 * 4e-8
        )
        assert np.all(np.abs(tuned["stem"][leaf]) > 0)


def test_multiplier_one_leaves_the_optimiser_unchanged():
    params = {"stem": {"kernel": jnp.ones((2, 2))}, "out": {"kernel": jnp.ones((2, 2))}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    cfg = TrainConfig(warmup_steps=0)
    tx, _ = make_optimizer(cfg, 10, 5)
    tx_head, _ = make_optimizer(cfg, 10, 5, head=("out",))
    s, s_head = tx.init(params), tx_head.init(params)
    assert jax.tree.structure(s) == jax.tree.structure(s_head)
    a, _ = tx.update(grads, s, params, value=jnp.asarray(1.0))
    b, _ = tx_head.update(grads, s_head, params, value=jnp.asarray(1.0))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(ValueError, match="needs the model's head"):
        make_optimizer(dataclasses.replace(cfg, head_lr_multiplier=2.0), 10, 5)


def test_in_head_reads_flat_and_pytree_paths():
    assert in_head(("out", "kernel"), ("out",)) and not in_head(("stem", "out"), ("out",))
    (path, _), *_ = jax.tree_util.tree_flatten_with_path({"out": {"kernel": 1}})[0]
    assert in_head(path, ("out",))


# ------------------------------------------------------------------------------------------------
# through fit


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_fit_starts_from_the_source_and_resume_does_not_reload_it(
    tiny_cnn, loaders, stats, tmp_path
):
    base = TrainConfig(epochs=1, lr=3e-3, warmup_steps=0, log_every_steps=100)
    pre = fit(tiny_cnn, base, *loaders(), stats, tmp_path / "pre")
    tune = dataclasses.replace(
        base, init_from=str(tmp_path / "pre"), lr=1e-4, head_lr_multiplier=50.0
    )
    tracker = DictTracker()
    first = fit(tiny_cnn, tune, *loaders(), stats, tmp_path / "tune", tracker=tracker, seed=3)
    assert first.init_from is not None
    assert first.init_from["checkpoint"] == str(pre.best_checkpoint)
    assert first.init_from["reinitialised"] == [
        "head.0.bias",
        "head.0.kernel",
        "out.bias",
        "out.kernel",
    ]
    assert read_meta(tmp_path / "tune")["init_from"] == first.init_from
    lrs = dict(tracker.metrics["train/lr"]), dict(tracker.metrics["train/lr_head"])
    assert lrs[0] and all(np.isclose(lrs[1][s], 50 * lr) for s, lr in lrs[0].items())
    # a resume continues from the run's own checkpoint: the source is not read again
    shutil.rmtree(tmp_path / "pre")
    longer = dataclasses.replace(tune, epochs=2)
    resumed = fit(tiny_cnn, longer, *loaders(), stats, tmp_path / "tune", seed=3, resume=True)
    assert resumed.steps == 2 * first.steps and resumed.init_from == first.init_from
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(tiny_cnn, longer, *loaders(), stats, tmp_path / "again")


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_ranger_slow_weights_start_from_the_copied_parameters(tiny_cnn, loaders, stats, tmp_path):
    # Lookahead keeps slow weights from the optimiser's init: they must be the copied ones, or
    # the first synchronisation (step 6) pulls the model halfway back to a random initialisation
    save_source(tmp_path / "pre", tiny_cnn)
    cfg = TrainConfig(
        epochs=2,
        optimizer="ranger",
        lr=1e-12,
        weight_decay=0.0,
        warmup_steps=0,
        schedule="constant",
        lookahead_steps=6,
        init_from=str(tmp_path / "pre"),
        init_head="keep",
        log_every_steps=100,
    )
    result = fit(tiny_cnn, cfg, *loaders(), stats, tmp_path / "tune", seed=5)
    assert result.steps == 6
    got = flat(load_for_inference(result.last_checkpoint)[0], nnx.Param)
    want = flat(load_for_inference(tmp_path / "pre")[0], nnx.Param)
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------------
# config and command line


def test_init_from_in_yaml_and_on_the_command_line(tmp_path, monkeypatch):
    from reco.cli import _with_init_from
    from reco.experiment import load_config

    config = ROOT / "configs" / "experiments" / "airshower_cnn_energy.yaml"
    yaml_file = tmp_path / "tune.yaml"
    yaml_file.write_text(
        config.read_text()
        + "\ntrain:\n  init_from: runs/pre\n  init_head: keep\n  head_lr_multiplier: 50\n"
    )
    cfg = load_config(yaml_file)
    assert (cfg.train.init_from, cfg.train.init_head, cfg.train.head_lr_multiplier) == (
        "runs/pre",
        "keep",
        50.0,
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config, _with_init_from(["train.lr=1e-4"], Path("runs/a: b")))
    assert cfg.train.init_from == str(tmp_path / "runs" / "a: b") and cfg.train.lr == 1e-4
    with pytest.raises(ConfigError, match="head_lr_multiplier"):
        load_config(config, ["train.head_lr_multiplier=-1"])


# ------------------------------------------------------------------------------------------------
# imported weaver weights


@pytest.fixture(scope="module")
def anchor() -> dict[str, np.ndarray]:
    if not ANCHOR.exists():
        pytest.skip(f"reference arrays not found at {ANCHOR}")
    with np.load(ANCHOR) as d:
        return {k: d[k] for k in d.files}


def _anchor_overrides(ref: dict[str, np.ndarray]) -> list[str]:
    c = json.loads(str(ref["meta/json"]))["config"]
    return [
        f"model.embed_dims={c['embed_dims']}",
        f"model.pair_embed_dims={c['pair_embed_dims']}",
        f"model.num_heads={c['num_heads']}",
        f"model.num_layers={c['num_layers']}",
        f"model.num_cls_layers={c['num_cls_layers']}",
        "model.classic_head_layout=false",  # the anchor's names are weaver 0.5's
    ]


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_imported_weaver_weights_are_a_fine_tuning_source(anchor, tmp_path):
    from reco.experiment import load_config
    from reco.finetune import import_part, init_source

    cfg = load_config(
        ROOT / "configs" / "experiments" / "jets_part.yaml", _anchor_overrides(anchor)
    )
    step_dir = import_part(cfg, ANCHOR, tmp_path / "imported", version="0.5")
    meta = read_meta(tmp_path / "imported")
    assert Path(meta["path"]) == step_dir and meta["n_outputs"] == 10
    assert meta["task"] is None  # 10 outputs, 6 classes in the config: names unknown
    assert meta["imported_from"]["version"] == "0.5"
    assert init_source(tmp_path / "imported")["checkpoint"] == str(step_dir)
    inputs = {
        "particles": jnp.asarray(anchor["in/features"].transpose(0, 2, 1)),
        "particles_mask": jnp.asarray(anchor["in/mask"][:, 0] > 0),
        "vectors": jnp.asarray(anchor["in/vectors"].transpose(0, 2, 1)),
    }
    spec = {"particles": (128, 17), "vectors": (128, 4)}
    # keep: the imported network itself (the reference logits of weaver 0.5)
    kept = build_model(cfg.model, spec, 10, seed=1)
    record = init_from_checkpoint(kept, cfg.model, tmp_path / "imported", "keep", None)
    assert record["imported_from"]["digest"]
    logits = nnx.jit(lambda m, x: m(x, train=False))(kept, inputs)
    np.testing.assert_allclose(logits, anchor["out/logits"], rtol=0, atol=1e-5)
    # replace: a new 6-class head on the imported backbone
    tuned = build_model(cfg.model, spec, 6, seed=1)
    record = init_from_checkpoint(tuned, cfg.model, tmp_path / "imported", "replace", None)
    assert record["reinitialised"] == ["fc.bias", "fc.kernel"]
    np.testing.assert_array_equal(
        flat(tuned)["embed.input_bn.mean"], flat(kept)["embed.input_bn.mean"]
    )
    with pytest.raises(FileExistsError):
        import_part(cfg, ANCHOR, tmp_path / "imported", version="0.5")


def test_import_checks_the_features_and_names_the_classes(anchor, tmp_path):
    from reco.experiment import load_config
    from reco.finetune import import_part

    config = ROOT / "configs" / "experiments" / "jets_part.yaml"
    cfg = load_config(config, _anchor_overrides(anchor))
    classes = [f"c{i}" for i in range(10)]
    import_part(cfg, ANCHOR, tmp_path / "a", version="0.5", classes=classes)
    assert read_meta(tmp_path / "a")["task"]["classes"] == classes
    with pytest.raises(ValueError, match="names 3 classes, the weights have 10"):
        import_part(cfg, ANCHOR, tmp_path / "b", version="0.5", classes=["x", "y", "z"])
    # two features fewer than the weights were trained on
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(
        "\n".join(
            line
            for line in config.read_text().splitlines()
            if "part_deta" not in line and "part_dphi" not in line
        )
    )
    with pytest.raises(ValueError, match=r"embed\.input_bn\.weight: shape \(17,\)"):
        import_part(
            load_config(fewer, _anchor_overrides(anchor)), ANCHOR, tmp_path / "d", version="0.5"
        )
    wrong = load_config(config, [*_anchor_overrides(anchor), "model.num_cls_layers=1"])
    with pytest.raises(ValueError, match="unknown keys"):
        import_part(wrong, ANCHOR, tmp_path / "c", version="0.5")


def test_wrapper_prefixes_are_stripped():
    sd = {"mod.embed.x": 1, "fc.0.weight": 2, "mod.norm.num_batches_tracked": 3}
    assert strip_wrappers(sd) == {"embed.x": 1, "fc.0.weight": 2}
    assert strip_wrappers({"module.mod.a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="both map to 'a'"):
        strip_wrappers({"mod.a": 1, "a": 2})
