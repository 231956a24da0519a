"""Deployment export of a trained model: ONNX (``jax2onnx``) or JAX's own ``jax.export``.

Both hold the inference function of a checkpoint, ``model(inputs, train=False)`` in float32
(raw outputs: normalised regression targets or class logits, as ``reco evaluate`` gets them
before de-normalising), with the weights as constants. Inputs are the batch keys the model
reads (found by tracing it once), named as in the loader's batches: input groups (``image``;
``particles``, ``vectors``; ``stations``, ``positions``, ``traces``) float32, set masks
(``particles_mask``, ``stations_mask``) bool. The batch axis ``B`` is symbolic. For the set
models (those that read a ``*_mask``) the particle/station axis ``P`` is symbolic too: the
exported function pads every set input with masked slots to the checkpoint's padding length
(``input_spec``) before calling the model, so any P up to it works (longer sets are cut, as
the loader would). Padding, because the pair tables of ParT and the station transformer
(``tril_pairs``) need a static set size; padded slots do not change the outputs (the models
mask them). Images (the CNN) keep their fixed shape. Files are written atomically (temporary
name in the same folder, then a rename); :func:`load_jax_export` reads the ``jax`` format back.
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pipeline.atomic import write_atomic

FORMATS = {"onnx": "model.onnx", "jax": "model.jaxexport"}  # format -> default file name
OUTPUT_NAME = "outputs"  # the ONNX output: Float[batch n_outputs], raw model outputs


class _Recorder(Mapping[str, Any]):
    """A read-only view of the inputs that remembers which keys the model looked up."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data, self.read = data, set[str]()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def input_signature(
    model: Any, input_spec: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[tuple[int | str, ...], np.dtype]]:
    """Per input the model reads: its shape with ``"B"`` (and ``"P"``) symbolic, and its dtype.

    Candidates are the groups of ``input_spec`` (float32) and a ``<group>_mask`` (bool, over
    the group's first axis) for each; the model is traced once (``jax.eval_shape``, no compute)
    to keep those it reads, in the order of the spec. When it reads a mask, the first per-event
    axis of every read input as long as that mask is the particle/station axis ``"P"``.
    """
    candidates: dict[str, jax.ShapeDtypeStruct] = {}
    for group, shape in input_spec.items():
        candidates[group] = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
        if shape:
            candidates[f"{group}_mask"] = jax.ShapeDtypeStruct((2, shape[0]), jnp.bool_)
    recorder: list[_Recorder] = []

    def call(inputs: dict[str, jax.Array]) -> jax.Array:
        recorder.append(_Recorder(inputs))
        return model(recorder[-1], train=False)

    jax.eval_shape(call, candidates)
    read = [k for k in candidates if k in recorder[0].read]
    set_lengths = {candidates[k].shape[1] for k in read if k.endswith("_mask")}
    out: dict[str, tuple[tuple[int | str, ...], np.dtype]] = {}
    for key in read:
        shape: tuple[int | str, ...] = ("B", *candidates[key].shape[1:])
        if candidates[key].shape[1] in set_lengths:
            shape = ("B", "P", *shape[2:])
        out[key] = (shape, np.dtype(candidates[key].dtype))
    return out


def _pad_to(x: jax.Array, length: int) -> jax.Array:
    """``x`` (B, P, ...) -> (B, length, ...): zeros (False) appended, then cut to ``length``.

    Concatenate-then-slice rather than ``lax.pad``: its symbolic pad width ``length - P``
    cannot be lowered by jax2onnx; here every shape is decidable for any P >= 1.
    """
    zeros = lax.full((x.shape[0], length, *x.shape[2:]), 0, x.dtype)
    return lax.slice_in_dim(lax.concatenate([x, zeros], 1), 0, length, axis=1)


def inference_fn(
    model: Any, signature: Mapping[str, tuple[tuple[int | str, ...], np.dtype]], set_length: int
) -> Callable[[Mapping[str, jax.Array]], jax.Array]:
    """``predict(inputs) -> Float[Array, "batch n_outputs"]`` (float32), weights as constants.

    Inputs with a ``"P"`` axis are padded (masked) to ``set_length`` first (module docstring).
    """
    from reco.state import merge_model, split_model

    graphdef, params, rest = split_model(model)

    def predict(inputs: Mapping[str, jax.Array]) -> jax.Array:
        padded = {
            k: _pad_to(jnp.asarray(inputs[k]), set_length) if "P" in shape else inputs[k]
            for k, (shape, _) in signature.items()
        }
        return merge_model(graphdef, params, rest)(padded, train=False).astype(jnp.float32)

    return predict


def _exportable(model: Any) -> None:
    """Switch ``model`` (in place) to the ops that convert; the outputs stay the same.

    Every module of the model that has paths without an ONNX lowering or with data-dependent
    shapes offers ``use_export_ops()`` (ParT's packed pairs, the fused attention).
    """
    from flax import nnx

    nodes = [node for _, node in nnx.iter_graph(model)]  # before any change to the graph
    for node in nodes:
        if callable(getattr(node, "use_export_ops", None)):
            node.use_export_ops()


def _prepare(
    checkpoint: Path, which: str
) -> tuple[Callable[..., jax.Array], dict[str, Any], dict[str, Any]]:
    """The inference function of a checkpoint's model, its input signature and the meta."""
    from reco.checkpoint import load_for_inference, read_meta

    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no such run folder or checkpoint")
    meta = read_meta(checkpoint, which)  # resolves the step folder; FileNotFoundError if none
    model, _, _ = load_for_inference(checkpoint, which)
    model.eval()  # BatchNorm and Dropout in inference mode as modules too: jax2onnx's BatchNorm
    # lowering reads the module's flag, not the call's, and warns (once per layer) where it is off
    _exportable(model)
    spec = {k: tuple(int(d) for d in v) for k, v in meta["input_spec"].items()}
    signature = input_signature(model, spec)
    lengths = [spec[k.removesuffix("_mask")][0] for k, (s, _) in signature.items() if "P" in s]
    predict = inference_fn(model, signature, max(lengths, default=0))
    return predict, signature, meta


@contextlib.contextmanager
def _conversion_patches() -> Iterator[None]:
    """The conversion's settings (not thread-safe: ``jnp.mod`` is swapped for its duration).

    jax2onnx's log quiet, and that of ``onnx_ir`` (a warning per value whose type it does not
    write, ~100 lines for a ParT; the tests check the file against the JAX model); its use of
    flax's deprecated ``Variable.value`` (BatchNorm lowering) not a warning; implicit rank
    promotion allowed (its Conv lowering broadcasts the bias; the tests make that an error
    otherwise); and ``jnp.mod`` (ParT's delta phi) traced as
    ``a - b * floor(a / b)`` (same convention: the sign of ``b``), because jax2onnx 0.12 cannot
    lower the float ``rem`` primitive on a symbolic batch axis.
    """
    logs = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels, mod = [log.level for log in logs], jnp.mod
    for log in logs:  # jax2onnx: plugin import warnings about optional packages (dm_pix)
        log.setLevel(logging.ERROR)
    jnp.mod = lambda a, b: a - b * jnp.floor(a / b)  # type: ignore[assignment]
    try:
        with warnings.catch_warnings(), jax.numpy_rank_promotion("allow"):
            warnings.filterwarnings(
                "ignore", "'.value' access is now deprecated", category=DeprecationWarning
            )
            yield
    finally:
        jnp.mod = mod  # type: ignore[assignment]
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


def _failing_op(err: BaseException) -> str:
    """The op whose conversion raised ``err``: the jax2onnx plugin in whose lowering it was
    raised, or the primitive named in the message (no plugin for it)."""
    frames = [f.filename for f in traceback.extract_tb(err.__traceback__)]
    plugins = [f.split("plugins/", 1)[1] for f in frames if "jax2onnx/plugins/" in f]
    if plugins:
        return f"op {plugins[-1].removesuffix('.py')!r}"
    named = re.search(r"primitive '([^']+)'", str(err))
    return f"op {named.group(1)!r}" if named else "an op"


def export_onnx(checkpoint: Path, out: Path, which: str = "best") -> Path:
    """Convert the inference function of ``checkpoint``'s model to ONNX; write ``out``; return it.

    Args:
        checkpoint: a run folder, its ``checkpoints`` folder, ``checkpoints/{best,last}`` or a
            step folder (``reco.checkpoint.resolve``).
        out: the ``.onnx`` file to write (its folder is created).
        which: "best" or "last", for run and checkpoints folders.

    The ONNX inputs are named by :func:`input_signature` (dims ``B``, ``P``), the output
    ``outputs`` (``B``, n_outputs).

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ValueError: jax2onnx cannot convert the model (the message names model and op).
    """
    from importlib.metadata import version

    from jax2onnx import to_onnx

    predict, signature, meta = _prepare(checkpoint, which)
    names = list(signature)
    specs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in signature.values()]
    model_name = str(meta["model"].get("name", "model"))
    try:
        with _conversion_patches():
            proto = to_onnx(
                lambda *arrays: predict(dict(zip(names, arrays, strict=True))),
                specs,
                model_name=model_name,
                input_names=names,
                output_names=[OUTPUT_NAME],
            )
    except Exception as err:
        raise ValueError(
            f"jax2onnx {version('jax2onnx')} cannot convert the {model_name!r} model of "
            f"{meta['path']}: {_failing_op(err)} failed: {type(err).__name__}: {err}"
        ) from err
    # jax2onnx annotates intermediate values with shapes that can disagree with its own layout
    # transposes (onnxruntime warns and ignores them): leave shape inference to the runtime.
    del proto.graph.value_info[:]
    return write_atomic(Path(out), proto.SerializeToString())


def export_jax(
    checkpoint: Path, out: Path, which: str = "best", platforms: tuple[str, ...] | None = None
) -> Path:
    """Serialise the jitted inference function with ``jax.export``; write ``out``; return it.

    Lossless (StableHLO of the same computation, weights included); ``B`` and ``P`` symbolic as
    in :func:`export_onnx`. ``platforms`` (e.g. ``("cpu", "cuda")``) to lower for; None: the
    current backend. Read it back with :func:`load_jax_export`. Arguments and errors as in
    :func:`export_onnx` (no conversion step).
    """
    predict, signature, _ = _prepare(checkpoint, which)
    dims = dict(zip(("B", "P"), jax.export.symbolic_shape("B, P"), strict=True))
    args = {
        k: jax.ShapeDtypeStruct(tuple(dims.get(d, d) for d in shape), dtype)  # type: ignore[arg-type]
        for k, (shape, dtype) in signature.items()
    }
    exported = jax.export.export(jax.jit(predict), platforms=platforms)(args)
    return write_atomic(Path(out), bytes(exported.serialize()))


def load_jax_export(path: Path) -> Callable[[Mapping[str, Any]], jax.Array]:
    """The function written by :func:`export_jax`: ``f(inputs) -> Float[Array, "B n_outputs"]``.

    ``inputs`` may hold more keys than the model reads (a whole loader batch); the others are
    ignored. Raises FileNotFoundError (naming ``path``) when there is no such file, and
    ValueError when it is not a ``jax.export`` serialisation.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such jax export file")
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as err:
        raise ValueError(f"{path}: not a jax.export serialisation ({err})") from err
    (template,), _ = jax.tree_util.tree_unflatten(exported.in_tree, range(len(exported.in_avals)))
    names = tuple(template)

    def call(inputs: Mapping[str, Any]) -> jax.Array:
        return exported.call({k: inputs[k] for k in names})

    return call


def default_out(checkpoint: Path, fmt: str, which: str = "best") -> Path:
    """``<run>/export/model.onnx`` (or ``model.jaxexport``) for a run or any checkpoint folder."""
    from reco.checkpoint import resolve

    step = resolve(Path(checkpoint), which)  # run/checkpoints/<which>/<step>
    run = step.parents[2] if step.parents[1].name == "checkpoints" else step.parent
    return run / "export" / FORMATS[fmt]


def export(checkpoint: Path, fmt: str, out: Path | None = None, which: str = "best") -> Path:
    """Export ``checkpoint`` in format ``fmt`` ("onnx" or "jax") to ``out`` (default:
    :func:`default_out`); return the file written.

    Raises:
        ValueError: an unknown format, or a model jax2onnx cannot convert.
        FileNotFoundError: no checkpoint at ``checkpoint``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {sorted(FORMATS)}")
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no such run folder or checkpoint")
    out = default_out(checkpoint, fmt, which) if out is None else Path(out)
    return (export_onnx if fmt == "onnx" else export_jax)(checkpoint, out, which)
