"""Build step of the demo delivery: turn the source repo's app.yaml into the artifact for one tag.

    python -m aicd.dev.demo_app.build --source DIR --out ARTIFACTS_ROOT --tag TAG

An artifact is the directory `<ARTIFACTS_ROOT>/<TAG>/` holding that version's `app.yaml`. Building the same
tag again from the same source is a no-op (a retried build step must succeed); a different app.yaml under an
existing tag is refused, because artifacts are immutable.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from aicd.dev.demo_app import CONFIG_FILE, ConfigError, load_config

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BuildError(Exception):
    pass


def artifact_dir(artifacts_root: Path, tag: str) -> Path:
    return artifacts_root / tag


def build(source: Path, out: Path, tag: str) -> Path:
    if not _TAG.match(tag):
        raise BuildError(f"--tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 128, no leading dot)")
    config_path = source / CONFIG_FILE
    if not config_path.is_file():
        raise BuildError(f"--source {source}: no {CONFIG_FILE} there")
    try:
        load_config(config_path)  # a malformed config fails the build, not the deploy
    except ConfigError as exc:
        raise BuildError(str(exc)) from exc
    content = config_path.read_bytes()
    target = artifact_dir(out, tag)
    existing = target / CONFIG_FILE
    if existing.exists():
        if existing.read_bytes() == content:
            return target
        raise BuildError(
            f"artifact {target} already exists with a different {CONFIG_FILE}; tags are immutable"
        )
    out.mkdir(parents=True, exist_ok=True)
    # Build next to the destination and rename into place, so a reader never sees a half-written artifact.
    staging = Path(tempfile.mkdtemp(prefix=f".{tag}.", dir=out))
    try:
        (staging / CONFIG_FILE).write_bytes(content)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if (target / CONFIG_FILE).exists() and (target / CONFIG_FILE).read_bytes() == content:
            return target  # a concurrent identical build won the rename
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aicd.dev.demo_app.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--source", type=Path, required=True, help="source checkout holding app.yaml")
    parser.add_argument("--out", type=Path, required=True, help="artifacts root directory")
    parser.add_argument("--tag", required=True, help="artifact tag, e.g. the short commit SHA")
    args = parser.parse_args(argv)
    try:
        path = build(args.source, args.out, args.tag)
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
