"""Shared fixtures. Integration tests read the real archives in ../shared/datasets; in CI
(CI=true) a missing archive is a failure, not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main

SHARED_DATASETS = Path(
    os.environ.get("BENCH_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """One decode cache for the whole session, never the user's ~/.cache/bench."""
    if "BENCH_TEST_CACHE" in os.environ:
        os.environ["BENCH_CACHE"] = os.environ["BENCH_TEST_CACHE"]
    else:
        os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("bench-cache"))
    yield


def shared_archive(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run the integration tests on the real archives")
        pytest.skip(f"{path} not found (set BENCH_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    return shared_archive("cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def imagenette64_archive() -> Path:
    return shared_archive("imagenette-64.tar.gz")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke
