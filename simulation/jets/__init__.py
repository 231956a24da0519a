"""Toy jet simulator (numpy only): JetClass-like boosted jets of QCD, H, W, Z and top.

Public API: :class:`JetsConfig`, :func:`simulate` (-> :class:`JetSample`), :func:`write_dataset`.
The physics model and its limits are described in docs/jets.md.
"""

from simulation.jets.config import JetsConfig
from simulation.jets.dataset import write_dataset
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS, JetSample, simulate

__all__ = ["JET_FIELDS", "PARTICLE_FIELDS", "JetSample", "JetsConfig", "simulate", "write_dataset"]
