"""Config validation of the jet simulator: errors name the field."""

import pytest

from simulation.jets.config import (
    DetectorConfig,
    HadronisationConfig,
    JetsConfig,
    KinematicsConfig,
    ResonanceConfig,
    ShowerConfig,
)


def test_defaults_are_valid() -> None:
    cfg = JetsConfig()
    assert cfg.classes == ("QCD", "Hbb", "Hcc", "Wqq", "Zqq", "Tbqq")
    assert cfg.kinematics.radius == 0.8


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: JetsConfig(classes=("QCD", "Hgg")), "classes"),
        (lambda: JetsConfig(classes=()), "classes"),
        (lambda: JetsConfig(classes=("QCD", "QCD")), "classes"),
        (lambda: JetsConfig(n_train=-1), "n_train"),
        (lambda: JetsConfig(chunk_size=0), "chunk_size"),
        (lambda: KinematicsConfig(pt_min=900, pt_max=500), "pt_min"),
        (lambda: KinematicsConfig(radius=0), "radius"),
        (lambda: KinematicsConfig(eta_max=-1), "eta_max"),
        (lambda: ResonanceConfig(mass_w=-80), "mass_w"),
        (lambda: ResonanceConfig(width_t=-1), "width_t"),
        (lambda: ResonanceConfig(qcd_gluon_fraction=1.5), "qcd_gluon_fraction"),
        (lambda: ShowerConfig(z_max=0.7), "z_max"),
        (lambda: ShowerConfig(lambda_qcd=2.0), "lambda_qcd"),
        (lambda: ShowerConfig(n_generations=-1), "n_generations"),
        (lambda: HadronisationConfig(b_mean_fraction=1.2), "b_mean_fraction"),
        (lambda: HadronisationConfig(photon_fraction=0.9, neutral_fraction=0.2), "photon_fraction"),
        (lambda: HadronisationConfig(c_ctau=(0.1,)), "c_ctau"),
        (lambda: HadronisationConfig(kick_sigma=0), "kick_sigma"),
        (lambda: HadronisationConfig(ue_pt_mean=0), "ue_pt_mean"),
        (lambda: HadronisationConfig(fragmentation_shape=0), "fragmentation_shape"),
        (lambda: HadronisationConfig(resonance_energy_scale=-1), "resonance_energy_scale"),
        (lambda: HadronisationConfig(k0s_fraction=0.7, lambda_fraction=0.4), "k0s_fraction"),
        (lambda: HadronisationConfig(k0s_fraction=-0.1), "k0s_fraction"),
        (lambda: HadronisationConfig(lambda_ctau=0), "lambda_ctau"),
        (lambda: ResonanceConfig(max_redraws=-1), "max_redraws"),
        (lambda: DetectorConfig(track_pt_min=-1), "track_pt_min"),
    ],
)
def test_errors_name_the_field(make, field) -> None:
    with pytest.raises(ValueError, match=field):
        make()
