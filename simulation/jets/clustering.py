"""Anti-kT clustering of flat particle lists with FastJet (the optional ``jets`` extra).

Shared by the Pythia engine (:mod:`simulation.jets.pythia`) and the Delphes reader
(:mod:`simulation.readers.delphes`): particles of many events are passed to FastJet's vectorised
(awkward) interface at once, and the jets come back as flat arrays with constituent indices into
the input, so no Python loop runs over events or particles.
"""

from __future__ import annotations

import awkward as ak
import numpy as np


def require_fastjet(who: str):
    """The ``fastjet`` module, or an ImportError saying that ``who`` needs it and how to install."""
    try:
        import fastjet
    except ImportError as err:
        raise ImportError(
            f"{who} clusters jets with FastJet: pip install 'reco[jets]' "
            "(the scikit-hep fastjet package)"
        ) from err
    return fastjet


def antikt(
    p: np.ndarray, energy: np.ndarray, offsets: np.ndarray, radius: float, min_pt: float, who: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anti-kT jets (E-scheme) with pT >= ``min_pt`` GeV of every event of flat particles.

    Args:
        p: Float[Array, "k 3"] momenta (px, py, pz), GeV, of the particles of all events; finite
            with pT > 0 (FastJet fails on NaN and zero-pT entries: callers drop those first).
        energy: Float[Array, "k"] energies, GeV.
        offsets: Int[Array, "e+1"] first particle of each event.
        radius: jet radius R.
        min_pt: smallest jet pT kept, GeV.
        who: the caller, named in the error when fastjet is missing.

    Returns:
        The jets' four-momenta (j, 4) = (px, py, pz, E) GeV, their event (j,), constituent
        offsets (j + 1,) and the constituents' indices into the flat particles (offsets[-1],);
        jets in FastJet's order within each event.
    """
    fastjet = require_fastjet(who)
    fields = (p[:, 0], p[:, 1], p[:, 2], energy)
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(x, np.float64)) for x in fields],
        ["px", "py", "pz", "E"],
    )
    offsets = np.asarray(offsets, np.int64)
    events = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))
    sequence = fastjet.ClusterSequence(
        events, fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    )
    jets = sequence.inclusive_jets(min_pt)
    index = sequence.constituent_index(min_pt)  # (events, jets, constituents), event-local
    p4 = np.stack(
        [
            ak.to_numpy(ak.flatten(jets[k], axis=1)).astype(np.float64)
            for k in ("px", "py", "pz", "E")
        ],
        axis=-1,
    ).reshape(-1, 4)
    event = np.repeat(np.arange(len(offsets) - 1), ak.to_numpy(ak.num(jets, axis=1)))
    n_const = ak.to_numpy(ak.flatten(ak.num(index, axis=2), axis=1)).astype(np.int64)
    const_offsets = np.concatenate([[0], np.cumsum(n_const)]).astype(np.int64)
    local = ak.to_numpy(ak.flatten(index, axis=None)).astype(np.int64)
    return p4, event, const_offsets, local + np.repeat(offsets[event], n_const)
