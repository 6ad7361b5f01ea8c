"""Validation errors that say where (file:line:col and JSON path) and what."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from aicd.spec.yamlsafe import Path


def json_path(path: Path) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


@dataclass(frozen=True)
class SpecError:
    file: str
    line: int
    col: int
    path: str  # JSON path, e.g. $.spec.stages[1].targets[0]
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: error: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SpecInvalid(Exception):
    """A spec failed validation; `errors` lists every problem found, in file order."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("\n".join(str(error) for error in errors))
        self.errors = errors
