"""Two runs logged to a real MLflow server, checked in the MLflow UI in headless Chromium.

Needs Debian's Chromium at ``/usr/bin/chromium`` and the ``playwright`` package (no
``playwright install``); skips without them. ``RECO_UPDATE_SCREENSHOTS=1`` also copies the
screenshot of the compare page to ``docs/figures/mlflow_compare.png``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused on a closed
# network; no GPU and no sandbox in containers (we may be root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000  # the UI shows names and values 3-6 s after loading; it polls, so no "idle"
FIGURE = Path(__file__).resolve().parents[2] / "docs" / "figures" / "mlflow_compare.png"

# Own experiment: test_mlflow_server.py expects exactly one run in "airshower" on the shared server.
EXPERIMENT = "airshower-ui"
RUNS = {  # run name -> (params, val/loss per step, test/energy_resolution_68)
    "cnn-energy-a": ({"model.name": "cnn", "train.lr": "0.001"}, [0.912, 0.641, 0.5321], 0.14237),
    "transformer-energy-b": (
        {"model.name": "transformer", "train.lr": "0.0003"},
        [0.874, 0.583, 0.4718],
        0.11862,
    ),
}
# What the compare page shows: values rounded to 3 significant digits.
SHOWN = ["0.532", "0.472", "0.142", "0.119"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # a server start (~30 s) and a browser: CI runs it in its second pass
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="the playwright package is missing"
    ),
]


def _resolution_png(path: Path) -> None:
    """A small resolution-vs-energy plot, written without pyplot (no global figure state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    ax.plot([1, 3, 10, 30, 100], [0.25, 0.18, 0.14, 0.12, 0.11], marker="o")
    ax.set(xscale="log", xlabel="E [EeV]", ylabel="68% resolution")
    fig.savefig(path)


def _log_runs(uri: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Logs RUNS to the server; returns the experiment id and run name -> run id."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    png = tmp_path / "resolution.png"
    _resolution_png(png)
    run_ids = {}
    for name, (params, val_loss, resolution) in RUNS.items():
        run_id = client.create_run(exp_id, run_name=name).info.run_id
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for step, loss in enumerate(val_loss):
            client.log_metric(run_id, "val/loss", loss, step=step)
        client.log_metric(run_id, "test/energy_resolution_68", resolution)
        client.log_artifact(run_id, str(png), "plots")
        client.set_terminated(run_id)
        run_ids[name] = run_id
    return exp_id, run_ids


def test_mlflow_ui_compares_runs_and_shows_the_plot(mlflow_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    exp_id, run_ids = _log_runs(mlflow_server, tmp_path)
    runs = quote(json.dumps(list(run_ids.values())))
    experiments = quote(json.dumps([exp_id]))
    compare_url = f"{mlflow_server}/#/compare-runs?runs={runs}&experiments={experiments}"
    run_id = run_ids["cnn-energy-a"]
    artifact = "plots/resolution.png"
    artifact_url = f"{mlflow_server}/#/experiments/{exp_id}/runs/{run_id}/artifacts/{artifact}"
    shot = tmp_path / "mlflow_compare.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)

            page.goto(compare_url, wait_until="domcontentloaded")
            expect(page.get_by_text("Comparing 2 Runs")).to_be_visible()
            for text in [*RUNS, *SHOWN]:
                expect(
                    page.get_by_text(text, exact=True).filter(visible=True).first
                ).to_be_visible()
            # The assistant side panel is open by default and covers part of the page.
            close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
            if close.count():
                close.first.click()
                expect(close).to_have_count(0)
            # The parallel-coordinates plot is drawn a moment after the table (a skeleton before).
            expect(page.locator(".js-plotly-plot").get_by_text("val/loss").first).to_be_visible()
            # The page scrolls inside <main>, so full_page=True sees one window: grow the window.
            height = page.evaluate("document.querySelector('main').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": height + 40})
            page.screenshot(path=shot)

            page.goto(artifact_url, wait_until="domcontentloaded")
            img = page.get_by_role("img", name=artifact)
            expect(img).to_be_visible()
            page.wait_for_function(
                "e => e.complete && e.naturalWidth > 0", arg=img.element_handle()
            )
            assert img.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [320, 240]
        finally:
            browser.close()

    assert shot.stat().st_size > 10_000
    if os.environ.get("RECO_UPDATE_SCREENSHOTS") == "1":
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, FIGURE)
