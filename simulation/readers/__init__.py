"""Readers and writers of external jet formats, to and from our event files (`pipeline.events`).

Public API (:mod:`simulation.readers.jetclass`): :func:`read_jetclass_root`,
:func:`write_jetclass_root`, :func:`convert_jetclass`, the JetClass schema constants and
:class:`JetClassFileError`. The Delphes reader (:mod:`simulation.readers.delphes`, needs the
``jets`` extra: FastJet) and the top-tagging reader (:mod:`simulation.readers.toptagging`) are
imported from their modules.
"""

from simulation.readers.jetclass import (
    JET_BRANCHES,
    JETCLASS_CLASSES,
    LABEL_BRANCHES,
    PARTICLE_BRANCHES,
    JetClassFileError,
    JetClassSample,
    convert_jetclass,
    read_jetclass_root,
    write_jetclass_root,
)

__all__ = [
    "JETCLASS_CLASSES",
    "JET_BRANCHES",
    "LABEL_BRANCHES",
    "PARTICLE_BRANCHES",
    "JetClassFileError",
    "JetClassSample",
    "convert_jetclass",
    "read_jetclass_root",
    "write_jetclass_root",
]
