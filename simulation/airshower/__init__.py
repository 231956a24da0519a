"""Air-shower simulator (numpy/scipy only): an Auger-SD-like array's response to cosmic rays.

Public API: :class:`AirshowerConfig`, :func:`simulate`, :func:`as_station_list`,
:func:`write_dataset`. The physics model is described in docs/simulation.md.
"""

from simulation.airshower.config import AirshowerConfig
from simulation.airshower.dataset import write_dataset
from simulation.airshower.simulate import as_station_list, simulate

__all__ = ["AirshowerConfig", "as_station_list", "simulate", "write_dataset"]
