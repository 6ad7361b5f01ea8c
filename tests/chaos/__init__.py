"""Chaos runs: many deliveries under injected faults, judged from Git and Temporal alone (issue 8)."""
