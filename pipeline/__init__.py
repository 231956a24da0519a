"""Contracts between the stages: config, event files, features, loader, tracking, provenance."""
