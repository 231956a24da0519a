"""Toy jets -> JetClass ROOT -> converted event files -> training with data.simulate: false."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run_chain import ROOT, reco

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "configs" / "experiments" / "jets_pfn.yaml"
TOY_ORDER = "QCD,Hbb,Hcc,Wqq,Zqq,Tbqq"


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_train_on_converted_jetclass_files(tmp_path):
    from reco.experiment import load_config, simulate
    from simulation.readers.jetclass import convert_jetclass, write_jetclass_root

    cfg = load_config(CONFIG, [f"data.dir={tmp_path / 'toy'}"], smoke=True)
    toy = simulate(cfg)
    conv = tmp_path / "conv"
    for split, path in toy.items():
        root = write_jetclass_root(tmp_path / f"{split}.root", path)
        if split == "test":  # one through the command line
            reco("export-jetclass", str(path), str(root), cwd=tmp_path)
            reco("convert-jetclass", str(root), "--out", str(conv / "test.h5"),
                 "--classes", TOY_ORDER, cwd=tmp_path)  # fmt: skip
        else:
            convert_jetclass(root, conv / f"{split}.h5", classes=TOY_ORDER.split(","), split=split)
    args = ["--smoke", "--set", f"data.dir={conv}", "--set", "data.simulate=false"]
    reco("train", str(CONFIG), *args, cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    data = json.loads((run_dir / "run.json").read_text())["data"]
    assert Path(data["train"]) == (conv / "train.h5").resolve()
    assert not (tmp_path / "data").exists()  # nothing simulated

    # JetClass order (Zqq before Wqq) differs from the experiment's: refused, naming both
    convert_jetclass(tmp_path / "val.root", conv / "val.h5", split="val")
    proc = reco("train", str(CONFIG), *args, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "val.h5" in proc.stderr and "task.classes" in proc.stderr
    missing = reco("train", str(CONFIG), "--smoke", "--set", f"data.dir={tmp_path / 'none'}",
                   "--set", "data.simulate=false", cwd=tmp_path, check=False)  # fmt: skip
    assert missing.returncode == 1 and "do not exist" in missing.stderr
