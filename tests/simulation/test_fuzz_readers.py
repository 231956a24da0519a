"""Bad input, fuzzed (hypothesis): truncated and bit-flipped copies of the external-format files.

Each reader either returns a sample without NaN or inf, or raises its own error naming the file:
never a crash in native code (HDF5, uproot's decompression, FastJet) or a hang. Cases are
derandomized and use no example database; ``pytest --hypothesis-show-statistics`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from simulation.jets import JetsConfig, simulate
from simulation.readers import read_jetclass_root, write_jetclass_root
from simulation.readers.delphes import DelphesFileError, read_delphes
from simulation.readers.jetclass import JetClassFileError
from simulation.readers.toptagging import TopTaggingFileError, read_toptagging

DATA = Path(__file__).parents[1] / "data"


def _settings(n: int) -> settings:
    return settings(settings.get_profile("fuzz"), max_examples=n)  # tests/conftest.py


@pytest.fixture(scope="module")
def jetclass_file(fuzz_dir: Path) -> Path:
    return write_jetclass_root(
        fuzz_dir / "jetclass.root", simulate(JetsConfig(), 30, seed=1), chunk_size=16
    )


def _read_or_named_error(
    path: Path, read: Callable[[Path], object], error: type[Exception]
) -> None:
    try:
        sample = read(path)
    except error as err:
        event(f"refused: {type(err).__name__}")
        assert str(path) in str(err), f"error does not name the file: {err}"
        return
    event("read (damage in values or unused bytes)")
    arrays = {**sample.arrays, **sample.particles.content}  # type: ignore[attr-defined]
    bad = [k for k, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    assert not bad, f"NaN/inf returned silently in {bad}"


@_settings(150)
@given(data=st.data())
def test_damaged_toptagging_files_name_the_file(
    fuzz_dir: Path, data: st.DataObject, damage, fresh_name
) -> None:
    path = fresh_name(fuzz_dir, "toptagging.h5")
    path.write_bytes(damage(data, (DATA / "toptagging_pandas_12jets.h5").read_bytes()))
    _read_or_named_error(path, read_toptagging, TopTaggingFileError)


@_settings(150)
@given(data=st.data())
def test_damaged_jetclass_files_name_the_file(
    fuzz_dir: Path, jetclass_file: Path, data: st.DataObject, damage
) -> None:
    path = fuzz_dir / "damaged.root"
    path.write_bytes(damage(data, jetclass_file.read_bytes()))
    _read_or_named_error(path, read_jetclass_root, JetClassFileError)


@_settings(40)
@given(data=st.data())
def test_damaged_delphes_files_name_the_file(fuzz_dir: Path, data: st.DataObject, damage) -> None:
    pytest.importorskip("fastjet")
    path = fuzz_dir / "delphes.root"
    path.write_bytes(damage(data, (DATA / "delphes_ttbar_10events.root").read_bytes()))
    _read_or_named_error(path, lambda p: read_delphes(p, label="Tbqq"), DelphesFileError)
