"""Config of the jet simulator: frozen dataclasses, one section per step of the toy model,
plus the section of the Pythia 8 engine (``engine: pythia``).

Built from YAML by ``pipeline.config.from_dict`` (strict keys, typed fields); every field has a
default. Units are in the comment of each field (GeV, rad, mm). The defaults aim at JetClass-like
jets (anti-kT R = 0.8, 500 < pT < 1000 GeV, |eta| < 2); see docs/jets.md for the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

# JetClass class names in JetClass label order (PART.md); the toy simulates this subset.
JETCLASS_LABELS: tuple[str, ...] = (
    "QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl",
)  # fmt: skip
SIMULATED_CLASSES: tuple[str, ...] = ("QCD", "Hbb", "Hcc", "Wqq", "Zqq", "Tbqq")


@dataclass(frozen=True)
class KinematicsConfig:
    """Jet kinematics at generation (the resonance or the initial parton) and the jet radius."""

    pt_min: float = 500.0  # GeV, lower edge of the generated pT (uniform)
    pt_max: float = 1000.0  # GeV, upper edge of the generated pT
    eta_max: float = 2.0  # |eta| limit of the generated direction (uniform in eta)
    radius: float = 0.8  # jet radius R; constituents kept within Delta R < R of the jet axis

    def __post_init__(self) -> None:
        if not 0 < self.pt_min <= self.pt_max:
            raise ValueError(f"pt_min: need 0 < pt_min <= pt_max, got {self.pt_min}, {self.pt_max}")
        if not self.eta_max > 0:
            raise ValueError(f"eta_max: must be positive, got {self.eta_max}")
        if not 0 < self.radius < 2:
            raise ValueError(f"radius: must be in (0, 2), got {self.radius}")


@dataclass(frozen=True)
class ResonanceConfig:
    """Resonance masses and Breit-Wigner widths (PDG, PHYSICS.md)."""

    mass_w: float = 80.38  # GeV, W mass
    width_w: float = 2.09  # GeV, W width
    mass_z: float = 91.19  # GeV, Z mass
    width_z: float = 2.50  # GeV, Z width
    mass_h: float = 125.1  # GeV, Higgs mass
    width_h: float = 0.004  # GeV, Higgs width
    mass_t: float = 172.5  # GeV, top mass
    width_t: float = 1.42  # GeV, top width
    qcd_gluon_fraction: float = 0.55  # fraction of QCD jets started by a gluon (rest light quarks)
    contained: bool = False  # redraw decay orientations until every prong is within R (matching)
    max_redraws: int = 50  # most redraws of an uncontained decay (it keeps its last draw)

    def __post_init__(self) -> None:
        for name in ("mass_w", "mass_z", "mass_h", "mass_t"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("width_w", "width_z", "width_h", "width_t"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_redraws < 0:
            raise ValueError(f"max_redraws: must be >= 0, got {self.max_redraws}")
        if not 0 <= self.qcd_gluon_fraction <= 1:
            raise ValueError(
                f"qcd_gluon_fraction: must be in [0, 1], got {self.qcd_gluon_fraction}"
            )


@dataclass(frozen=True)
class ShowerConfig:
    """Angular-ordered parton shower (independent soft-collinear emissions per emitter)."""

    lambda_qcd: float = 0.088  # GeV, one-loop Lambda (nf = 5): alpha_s(m_Z) = 0.118
    kt_cut: float = 1.5  # GeV, shower cut-off in emission kT (alpha_s frozen below)
    z_max: float = 0.5  # largest momentum fraction of an emission (softer side of a splitting)
    n_generations: int = 4  # emission generations (emitted gluons radiate inside their own angle)
    alpha_scale: float = 0.65  # multiplies alpha_s (dimensionless tune of the emission density)

    def __post_init__(self) -> None:
        if not 0 < self.lambda_qcd < self.kt_cut:
            raise ValueError(f"lambda_qcd: need 0 < lambda_qcd < kt_cut, got {self.lambda_qcd}")
        if not 0 < self.z_max <= 0.5:
            raise ValueError(f"z_max: must be in (0, 0.5], got {self.z_max}")
        if self.n_generations < 0:
            raise ValueError(f"n_generations: must be >= 0, got {self.n_generations}")
        if not self.alpha_scale >= 0:
            raise ValueError(f"alpha_scale: must be >= 0, got {self.alpha_scale}")


@dataclass(frozen=True)
class HadronisationConfig:
    """Parton -> hadrons: multiplicity, kT kicks, species, heavy-flavour hadrons and decays."""

    hadrons_per_log_e: float = 5.0  # mean hadrons per unit ln(1 + E / hadron_e0) of a parton
    hadron_e0: float = 2.0  # GeV, energy scale of the hadron multiplicity of a parton
    lab_energy_scale: float = 1.0  # QCD jets: lab parton energy -> multiplicity energy scale
    resonance_energy_scale: float = 1.0  # resonance prongs: rest-frame energy -> multiplicity scale
    fragmentation_shape: float = 1.0  # Gamma shape of the momentum shares (1 flat, < 1 harder)
    gluon_factor: float = 1.0  # hadron multiplicity of a gluon relative to a quark of equal E
    kick_sigma: float = 0.35  # GeV, Gaussian transverse momentum of a hadron to its parton
    photon_fraction: float = 0.26  # fraction of light hadrons that are photons (pi0 -> gamma)
    neutral_fraction: float = 0.11  # fraction that are long-lived neutral hadrons (K0L, n)
    lepton_fraction: float = 0.006  # fraction that are leptons (half e, half mu)
    k0s_fraction: float = 0.0  # fraction of light hadrons that are K0S, decaying displaced (V0)
    lambda_fraction: float = 0.0  # fraction of light hadrons that are Lambda (V0)
    k0s_ctau: float = 26.84  # mm, c*tau of the K0S (PDG)
    lambda_ctau: float = 78.9  # mm, c*tau of the Lambda (PDG)
    b_mean_fraction: float = 0.70  # mean momentum fraction of the b hadron (Beta distribution)
    c_mean_fraction: float = 0.55  # mean momentum fraction of the c hadron
    b_ctau: float = 0.455  # mm, c*tau of b hadrons (B0 455, B+ 491, Bs 453 um: mean)
    c_ctau: tuple[float, ...] = (0.123, 0.312, 0.151)  # mm, c*tau of D0, D+, Ds
    c_species_fractions: tuple[float, ...] = (0.6, 0.25, 0.15)  # fractions of D0, D+, Ds
    b_decay_products: float = 5.5  # mean number of visible b-hadron decay products
    c_decay_products: float = 3.0  # mean number of visible c-hadron decay products
    semileptonic_fraction: float = 0.2  # probability a heavy-hadron decay has a lepton (e or mu)
    ue_density: float = 2.5  # underlying-event particles per unit eta-phi area (mean, Poisson)
    ue_pt_mean: float = 0.6  # GeV, mean pT of underlying-event particles (exponential)

    def __post_init__(self) -> None:
        fractions = (self.photon_fraction, self.neutral_fraction, self.lepton_fraction)
        if min(fractions) < 0 or sum(fractions) >= 1:
            raise ValueError(
                "photon_fraction, neutral_fraction, lepton_fraction: must be >= 0 with sum < 1"
            )
        if min(self.k0s_fraction, self.lambda_fraction) < 0 or (
            self.k0s_fraction + self.lambda_fraction >= 1
        ):
            raise ValueError("k0s_fraction, lambda_fraction: must be >= 0 with sum < 1")
        for name in ("b_mean_fraction", "c_mean_fraction", "semileptonic_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}: must be in (0, 1), got {getattr(self, name)}")
        if len(self.c_ctau) != len(self.c_species_fractions) or min(self.c_ctau) <= 0:
            raise ValueError("c_ctau: needs one positive c*tau per entry of c_species_fractions")
        for name in (
            "hadrons_per_log_e",
            "hadron_e0",
            "lab_energy_scale",
            "resonance_energy_scale",
            "fragmentation_shape",
            "gluon_factor",
            "kick_sigma",
            "b_ctau",
            "k0s_ctau",
            "lambda_ctau",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.ue_density < 0 or not self.ue_pt_mean > 0:
            raise ValueError("ue_density, ue_pt_mean: need ue_density >= 0 and ue_pt_mean > 0")
        for name in ("b_decay_products", "c_decay_products"):
            if not getattr(self, name) >= 2:
                raise ValueError(f"{name}: must be >= 2, got {getattr(self, name)}")


@dataclass(frozen=True)
class DetectorConfig:
    """CMS-like resolutions and thresholds (a Delphes-card-like parametrisation)."""

    track_pt_min: float = 0.5  # GeV, charged-particle (track) pT threshold
    photon_e_min: float = 0.5  # GeV, photon energy threshold
    neutral_e_min: float = 1.0  # GeV, neutral-hadron energy threshold
    track_res_const: float = 0.005  # relative track pT resolution, constant term
    track_res_slope: float = 1.5e-4  # 1/GeV, relative track pT resolution growing with pT
    ecal_stochastic: float = 0.03  # sqrt(GeV), photon energy resolution sigma/E = a/sqrt(E) + c
    ecal_constant: float = 0.005  # photon energy resolution constant term
    hcal_stochastic: float = 0.8  # sqrt(GeV), neutral-hadron energy resolution stochastic term
    hcal_constant: float = 0.05  # neutral-hadron energy resolution constant term
    d0_res_const: float = 0.010  # mm, transverse impact-parameter resolution at high pT
    d0_res_msc: float = 0.030  # mm GeV, multiple-scattering term of the d0 resolution (/pT)
    dz_res_const: float = 0.015  # mm, longitudinal impact-parameter resolution at high pT
    dz_res_msc: float = 0.040  # mm GeV, multiple-scattering term of the dz resolution (/pT)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")


@dataclass(frozen=True)
class PythiaConfig:
    """The Pythia 8 engine (``engine: pythia``, simulation/jets/pythia.py, docs/jets.md).

    pp collisions at ``ecm``, one hard process per class; hadron-level visible final-state
    particles clustered with FastJet anti-kT (R = kinematics.radius); jets kept in the pT / eta
    window of ``kinematics``; signal jets truth-matched to a hadronic resonance decay. The
    impact-parameter resolution is the toy's (``detector``); nothing else is smeared.
    """

    ecm: float = 13000.0  # GeV, proton-proton centre-of-mass energy
    pthat_min: float | None = None  # GeV, hard-process pT-hat lower edge; None: 0.9 pt_min
    pthat_max: float | None = None  # GeV, hard-process pT-hat upper edge; None: 1.1 pt_max
    particle_eta_max: float = 3.0  # |eta| limit of the final-state particles clustered
    particle_pt_min: float = 0.0  # GeV, pT threshold of the final-state particles clustered
    tau0_max: float | None = None  # mm, stable above this c tau0 (CMS: 10); None: K0S, Lambda decay
    match_radius: float | None = None  # Delta R of resonance and decay quarks to the jet; None: R
    max_jets_per_event: int = 2  # hardest passing (and matched) jets kept per event
    seed_offset: int = 0  # enters every Pythia seed: another sample for the same experiment seed
    shard_size: int = 500  # jets per Pythia instance (own seed); results do not depend on workers
    batch_events: int = 20  # events per Pythia.nextBatch call (awkward arrays, vectorised)
    workers: int | None = None  # worker processes, each its own Pythia; None: one per usable core
    max_tries: int = 40  # a shard fails after generating max_tries x its jets events

    def __post_init__(self) -> None:
        if not self.ecm > 0:
            raise ValueError(f"ecm: must be positive, got {self.ecm}")
        for name in ("pthat_min", "pthat_max", "match_radius"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: must be positive or null, got {value}")
        if (
            self.pthat_min is not None
            and self.pthat_max is not None
            and not self.pthat_min < self.pthat_max
        ):
            raise ValueError(
                f"pthat_min: must be below pthat_max, got {self.pthat_min}, {self.pthat_max}"
            )
        if not self.particle_eta_max > 0:
            raise ValueError(f"particle_eta_max: must be positive, got {self.particle_eta_max}")
        if self.tau0_max is not None and not self.tau0_max > 0:
            raise ValueError(f"tau0_max: must be positive or null, got {self.tau0_max}")
        for name in ("particle_pt_min", "seed_offset"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("max_jets_per_event", "shard_size", "batch_events", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: must be >= 1 or null, got {self.workers}")


@dataclass(frozen=True)
class JetsConfig:
    """The jet simulator: engine, classes, sample sizes and the model sections.

    ``engine: toy`` runs the numpy model of the sections below; ``engine: pythia`` generates the
    same classes with Pythia 8 (section ``pythia``; uses ``kinematics`` for the jet window and
    radius and ``detector`` for the impact-parameter resolution, ignores the other sections).
    """

    kind: Literal["jets"] = "jets"  # simulator variant (YAML key simulation.kind)
    engine: Literal["toy", "pythia"] = "toy"  # generator: the numpy toy or Pythia 8 (pythia8mc)
    classes: tuple[str, ...] = SIMULATED_CLASSES  # JetClass names simulated, label = position
    n_train: int = 6000  # jets in the train split (balanced over classes)
    n_val: int = 1200  # jets in the validation split
    n_test: int = 1200  # jets in the test split
    chunk_size: int = 5000  # jets simulated per vectorised chunk (bounds memory)
    kinematics: KinematicsConfig = field(default_factory=KinematicsConfig)  # pT, eta, R
    resonances: ResonanceConfig = field(default_factory=ResonanceConfig)  # masses, widths
    shower: ShowerConfig = field(default_factory=ShowerConfig)  # parton shower
    hadronisation: HadronisationConfig = field(default_factory=HadronisationConfig)  # hadrons
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # smearing, thresholds
    pythia: PythiaConfig = field(default_factory=PythiaConfig)  # engine: pythia only

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("classes: needs at least one class")
        unknown = [c for c in self.classes if c not in SIMULATED_CLASSES]
        if unknown:
            raise ValueError(
                f"classes: {unknown} not simulated; choose from {', '.join(SIMULATED_CLASSES)}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: duplicates in {self.classes}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {self.chunk_size}")
        if self.engine == "pythia":
            kin, py = self.kinematics, self.pythia
            lo, hi = self.pthat_window
            if not lo < hi:
                raise ValueError(
                    f"pythia.pthat_min: the pT-hat window [{lo}, {hi}] GeV is empty "
                    f"(kinematics.pt_min {kin.pt_min}, pt_max {kin.pt_max})"
                )
            if py.particle_eta_max < kin.eta_max + kin.radius:
                raise ValueError(
                    f"pythia.particle_eta_max: {py.particle_eta_max} cuts into jets of "
                    f"|eta| < kinematics.eta_max = {kin.eta_max} and R = {kin.radius}; "
                    f"needs >= {kin.eta_max + kin.radius}"
                )

    def identity(self) -> dict[str, object]:
        """The fields that determine the jets, for the data hash: the sections the engine
        ignores are left out (toy: ``pythia``; pythia: the toy's resonances, shower and
        hadronisation), so editing or extending them does not orphan existing event files."""
        ignored = ("pythia",) if self.engine == "toy" else ("resonances", "shower", "hadronisation")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ignored}

    @property
    def pthat_window(self) -> tuple[float, float]:
        """(min, max) pT-hat of the Pythia hard process in GeV, defaults resolved."""
        py, kin = self.pythia, self.kinematics
        lo = 0.9 * kin.pt_min if py.pthat_min is None else py.pthat_min
        hi = 1.1 * kin.pt_max if py.pthat_max is None else py.pthat_max
        return lo, hi
