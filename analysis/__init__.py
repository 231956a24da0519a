"""Analysis of predictions files: metrics, binned resolutions, plots (never imports `reco`)."""
