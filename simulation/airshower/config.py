"""Config of the air-shower simulator: frozen dataclasses, one section per part of the model.

Built from YAML by ``pipeline.config.from_dict`` (strict keys, typed fields); every field has a
default, and ``None`` means "not set" (the documented fallback applies). Units are in the comment
of each field. The defaults describe an Auger SD-1500-like array; ``array.layout: cartesian``
alone switches to the 14 x 14, 750 m grid of the CNN tutorial (see :class:`ArrayConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Mass numbers of the primaries the simulator knows (names as used in the composition mapping).
SPECIES_MASS: dict[str, int] = {"p": 1, "He": 4, "N": 14, "Fe": 56}

# Layout presets used where the array fields are None: (n_rows, n_cols, spacing in m).
_LAYOUT_DEFAULTS: dict[str, tuple[int, int, float]] = {
    "triangular": (11, 11, 1500.0),  # Auger SD-1500-like
    "cartesian": (14, 14, 750.0),  # the CNN tutorial's toy array
}


@dataclass(frozen=True)
class ArrayConfig:
    """Surface array of water-Cherenkov stations on a flat ground, mapped to an (R, C) image.

    Triangular: offset coordinates, odd rows shifted by half a spacing, rows spaced
    spacing * sqrt(3) / 2. The default 11 x 11 grid at 1500 m spans 15 km x 13 km: a 10^20 eV
    shower stays above the 3 VEM threshold out to ~3.5 km from the axis (~7 km along the
    ground for 60 deg), so with the core within 750 m of the centre its footprint is contained
    except for the faint far tail of the most inclined showers.
    """

    layout: Literal["triangular", "cartesian"] = "triangular"  # station grid geometry
    n_rows: int | None = None  # image rows (stations); None -> 11 triangular, 14 cartesian
    n_cols: int | None = None  # image cols (stations); None -> 11 triangular, 14 cartesian
    spacing: float | None = None  # m between neighbours; None -> 1500 triangular, 750 cartesian
    altitude: float = 1400.0  # m above sea level of the (flat) ground
    station_area: float = 10.0  # m^2, top area of a water tank
    station_height: float = 1.2  # m, water height (sets the projected area at zenith)

    def __post_init__(self) -> None:
        for name in ("n_rows", "n_cols"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name}: needs at least 2 stations, got {value}")
        if self.spacing is not None and self.spacing <= 0:
            raise ValueError(f"spacing: must be positive, got {self.spacing}")
        if self.station_area <= 0 or self.station_height <= 0:
            raise ValueError("station_area, station_height: must be positive")

    @property
    def shape(self) -> tuple[int, int]:
        """(R, C) of the station image, with the layout defaults filled in."""
        rows, cols, _ = _LAYOUT_DEFAULTS[self.layout]
        return (self.n_rows or rows, self.n_cols or cols)

    @property
    def grid_spacing(self) -> float:
        """Station spacing in m, with the layout default filled in."""
        return self.spacing if self.spacing is not None else _LAYOUT_DEFAULTS[self.layout][2]


@dataclass(frozen=True)
class PrimaryConfig:
    """Distributions of the primary cosmic ray: energy, direction, core and mass."""

    log10_energy_min: float = 18.5  # log10(E/eV), lower edge of the energy range
    log10_energy_max: float = 20.0  # log10(E/eV), upper edge of the energy range
    spectral_index: float = 1.0  # gamma of dN/dE ~ E^-gamma (dimensionless); 1 = uniform in log10 E
    zenith_min_deg: float = 0.0  # deg, lower edge of the zenith range
    zenith_max_deg: float = 60.0  # deg, upper edge; zenith pdf ~ sin(theta) cos(theta) between
    core_radius: float | None = None  # m, core uniform in a disk at the centre; None -> spacing/2
    composition: dict[str, float] = field(
        default_factory=lambda: {"p": 0.25, "He": 0.25, "N": 0.25, "Fe": 0.25}
    )  # relative fractions (dimensionless, normalised here) of the species p, He, N, Fe

    def __post_init__(self) -> None:
        if not self.log10_energy_min <= self.log10_energy_max:
            raise ValueError("log10_energy_min: must not exceed log10_energy_max")
        if not 0.0 <= self.zenith_min_deg <= self.zenith_max_deg < 90.0:
            raise ValueError(
                "zenith_min_deg, zenith_max_deg: need 0 <= min <= max < 90, got "
                f"{self.zenith_min_deg}, {self.zenith_max_deg}"
            )
        if self.core_radius is not None and self.core_radius < 0:
            raise ValueError(f"core_radius: must be >= 0, got {self.core_radius}")
        unknown = sorted(set(self.composition) - set(SPECIES_MASS))
        if unknown:
            raise ValueError(
                f"composition: unknown species {unknown}; known: {', '.join(SPECIES_MASS)}"
            )
        negative = sorted(k for k, v in self.composition.items() if not v >= 0)
        if negative:
            raise ValueError(f"composition: fractions must be >= 0, got {negative} negative")
        if not sum(self.composition.values()) > 0:
            raise ValueError("composition: fractions must sum to more than 0")

    def fractions(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """Species names and their normalised fractions, in the order of SPECIES_MASS."""
        names = tuple(k for k in SPECIES_MASS if self.composition.get(k, 0.0) > 0)
        total = sum(self.composition[k] for k in names)
        return names, tuple(self.composition[k] / total for k in names)


@dataclass(frozen=True)
class ShowerConfig:
    """Longitudinal development and ground signals at 1000 m (energy scale and composition).

    The normalisations were tuned once so that the p/He/N/Fe equal mix gives a mean S1000 at
    38 deg of 47.7 VEM at 10 EeV, i.e. E = 0.186 EeV * S38^1.031 (Auger's calibration).
    """

    hadronic_model: Literal["EPOS-LHC", "QGSJetII-04"] = "EPOS-LHC"  # Gumbel Xmax constants
    muon_s1000: float = 19.0  # VEM, muonic S1000 of a 10 EeV proton at 38 deg (mean over showers)
    muon_beta: float = 0.9  # Heitler-Matthews exponent: N_mu ~ A^(1 - beta) E^beta
    muon_atten_length: float = 3000.0  # g/cm^2, mild attenuation of muons with slant depth
    muon_fluct_p: float = 0.13  # relative RMS of the muon number for protons (shower to shower)
    muon_fluct_fe: float = 0.05  # relative RMS of the muon number for iron (linear in lnA between)
    em_s1000: float = 33.4  # VEM, EM S1000 at 10 EeV where it peaks (DX = em_dx_peak)
    em_dx_peak: float = 150.0  # g/cm^2 past Xmax where the EM signal at 1000 m peaks
    em_atten_length: float = 230.0  # g/cm^2, e-folding of the EM signal with depth past the peak
    front_origin_offset: float = 300.0  # g/cm^2 (slant), front's virtual origin above Xmax


@dataclass(frozen=True)
class LDFConfig:
    """Lateral distribution S(r) = S1000 (r/1000)^b ((r + 700)/1700)^(b + g) per component."""

    em_beta: float = -2.5  # slope b of the EM part at shower age s = 1.2 (dimensionless)
    em_beta_age: float = 1.0  # change of the EM b per unit of age (older = flatter)
    em_gamma: float = -0.3  # g of the EM part (dimensionless)
    muon_beta: float = -2.1  # slope b of the muonic part for vertical showers (flatter than EM)
    muon_beta_sec: float = 0.3  # change of the muonic b per unit of (sec(theta) - 1)
    muon_gamma: float = 0.0  # g of the muonic part (dimensionless)
    r_min: float = 30.0  # m, distances to the axis are clipped here (the LDF diverges at 0)


@dataclass(frozen=True)
class DetectorConfig:
    """Station response: particle counting, trigger, saturation and timing."""

    em_particle_vem: float = 0.2  # VEM per EM particle (mean deposit of ~10 MeV photons/electrons)
    trigger_vem: float = 3.0  # VEM, a station triggers at or above this total signal
    saturation_vem: float = 4000.0  # VEM, cap of the integrated signal (low-gain saturation)
    time_resolution: float = 10.0  # ns, clock/GPS floor of the arrival-time resolution
    time_jitter_scale: float = 1.0  # dimensionless, scales pulse width / sqrt(1 + n_particles)


@dataclass(frozen=True)
class TraceConfig:
    """FADC-like time traces: log-normal pulses per component, sampled per station."""

    enabled: bool = True  # write station/trace (n, R, C, n_bins) float16
    n_bins: int = 120  # number of time bins
    bin_width: float = 25.0  # ns per bin
    pre_trigger: float = 250.0  # ns of the window before the station's arrival time
    muon_t0: float = 20.0  # ns, median delay of muons behind the front near the axis
    muon_t_r: float = 60.0  # ns per km of axis distance, muon median delay growth
    muon_t_geom: float = 0.3  # dimensionless, weight of the geometric delay ~ r^2 / (2 c L)
    muon_sigma_ln: float = 0.6  # log-normal shape of the muon pulse (dimensionless)
    em_t0: float = 40.0  # ns, median delay of EM particles near the axis
    em_t_r: float = 250.0  # ns per km of axis distance, EM median delay growth (scattering)
    em_t_geom: float = 0.3  # dimensionless, weight of the geometric delay (from Xmax) for EM
    em_sigma_ln: float = 0.7  # log-normal shape of the EM pulse (dimensionless)
    shape_fluct: float = 0.15  # RMS of ln(median) per station and component (dimensionless)

    def __post_init__(self) -> None:
        if self.n_bins < 1 or self.bin_width <= 0:
            raise ValueError("n_bins, bin_width: must be positive")


@dataclass(frozen=True)
class AirshowerConfig:
    """The air-shower simulator section (YAML key ``simulation``, ``kind: airshower``)."""

    kind: Literal["airshower"] = "airshower"  # simulator variant
    n_train: int = 80_000  # events in train.h5
    n_val: int = 10_000  # events in val.h5
    n_test: int = 10_000  # events in test.h5
    chunk_size: int = 4096  # events simulated at once (bounds memory)
    array: ArrayConfig = field(default_factory=ArrayConfig)  # station grid
    primaries: PrimaryConfig = field(default_factory=PrimaryConfig)  # primary distributions
    shower: ShowerConfig = field(default_factory=ShowerConfig)  # Xmax and S1000 model
    ldf: LDFConfig = field(default_factory=LDFConfig)  # lateral distribution
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # station response
    traces: TraceConfig = field(default_factory=TraceConfig)  # time traces

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {self.chunk_size}")
