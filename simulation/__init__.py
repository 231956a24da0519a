"""Simulators (numpy only): they write event files through `pipeline.events`."""
