"""Small text helpers of the boards: numbers as the tables show them, markdown, file names."""

from __future__ import annotations

import math

import pandas as pd

from bench.stats import (
    Summary,
)


def fmt(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
    if s.n < 2:
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, tablefmt="github", disable_numparse=True) if len(df) else "_none_"


def _number(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
