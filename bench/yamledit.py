"""Values-file writes: aicd's exact text edit (`aicd.yamledit.set_keys`) against the ruamel round trip it
replaced, on the write a step makes.

Run from the repo root: `.venv/bin/python bench/yamledit.py [--reps N] [--sites N]`.

- `step`: the canary tag and weight of a setWeight step, written into a typical Helm values file (the
  corpus' helm-web-2space.yaml, 90 lines, comments and nested lists); median microseconds per call.
- `promote`: image tag, canary tag and weight of a promotion, same file.
- `insert`: a first write into a values file that has no canary keys yet (two keys added).
- `edge`: one image tag written into each of N small site files, as an edge batch commit does (seconds).

Each figure is measured for the text edit and for the round trip (ruamel load + set + dump, the previous
implementation, kept here as the reference); the ratios are round trip / text edit (above 1: faster now).
Last line: `step_us=A step_rt_us=B step_ratio=R promote_us=... insert_us=... edge_s=... edge_rt_s=... edge_ratio=...`
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from aicd.yamledit import set_keys

ROOT = Path(__file__).resolve().parents[1]
TYPICAL = ROOT / "tests" / "data" / "values" / "helm-web-2space.yaml"
SITE = (
    "site: {site}\n"
    "image:\n"
    "  repository: registry.example.com/edge/router\n"
    "  tag: 8c1f0ab  # set by aicd\n"
    "canary:\n"
    "  tag: 8c1f0ab\n"
    "  weight: 0\n"
)


def round_trip(text: str, values: Mapping[str, Any]) -> str:
    """The implementation set_keys replaced: ruamel load, set dotted keys, dump."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    document = yaml.load(text) if text.strip() else None
    if document is None:
        document = CommentedMap()
    for dotted, value in values.items():
        node = document
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = CommentedMap()
                node[part] = child
            node = child
        node[parts[-1]] = value
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


Writer = Callable[[str, Mapping[str, Any]], str]


def per_call_us(writer: Writer, text: str, values: Mapping[str, Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        writer(text, values)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def edge_seconds(writer: Writer, sites: int) -> float:
    files = [SITE.format(site=f"pop-{index:05d}") for index in range(sites)]
    started = time.perf_counter()
    for text in files:
        writer(text, {"image.tag": "9a8b7c6"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--sites", type=int, default=10_000)
    args = parser.parse_args()
    typical = TYPICAL.read_text(encoding="utf-8")
    fresh = typical.replace(
        'canary:\n  enabled: true\n  tag: "4f2c1d9"\n  weight: 0   # percent of requests, set by aicd\n', ""
    )
    cases = {
        "step": (typical, {"canary.tag": "9a8b7c6", "canary.weight": 10}),
        "promote": (typical, {"image.tag": "9a8b7c6", "canary.weight": 0, "canary.tag": "9a8b7c6"}),
        "insert": (fresh, {"canary.tag": "9a8b7c6", "canary.weight": 10}),
    }
    figures: dict[str, str] = {}
    for name, (text, values) in cases.items():
        edit = per_call_us(set_keys, text, values, args.reps)
        reference = per_call_us(round_trip, text, values, max(20, args.reps // 10))
        print(
            f"{name:8} text edit {edit:8.0f} us   round trip {reference:8.0f} us   ratio {reference / edit:5.1f}"
        )
        figures |= {
            f"{name}_us": f"{edit:.0f}",
            f"{name}_rt_us": f"{reference:.0f}",
            f"{name}_ratio": f"{reference / edit:.1f}",
        }
    edge = edge_seconds(set_keys, args.sites)
    edge_reference = edge_seconds(round_trip, args.sites)
    print(f"edge     {args.sites} site files: text edit {edge:.2f} s   round trip {edge_reference:.2f} s")
    figures |= {"edge_sites": str(args.sites), "edge_s": f"{edge:.2f}", "edge_rt_s": f"{edge_reference:.2f}"}
    figures["edge_ratio"] = f"{edge_reference / edge:.1f}"
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
