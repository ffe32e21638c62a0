"""A user's own models and losses: `FILE.py:NAME` or `package.module:NAME` wherever a model or
loss name is accepted, and installed packages' entry points (groups `bench.models`, `bench.losses`).

A reference resolves to a Python object plus its `source` (the reference as given, the file
and its sha256), which the run record keeps so a leaderboard row can be traced to the exact
code. Anything that does not resolve is one UsageError line naming what was wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from bench.errors import UsageError

ENTRY_POINT_GROUPS = {"model": "bench.models", "loss": "bench.losses"}


def is_reference(name: str) -> bool:
    """'FILE.py:NAME' or 'package.module:NAME'; 'timm:<name>' and registry names are not."""
    left, sep, right = name.rpartition(":")
    if not sep or not left or left == "timm":
        return False
    return left.endswith(".py") or all(part.isidentifier() for part in left.split("."))


@dataclass(frozen=True)
class Plugin:
    obj: object
    source: dict  # {"ref", "path", "sha256"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve(kind: str, ref: str, base_dir: str | None = None) -> Plugin:
    """The object `ref` names. `kind` ('model' or 'loss') words the errors; relative FILE.py
    paths resolve against `base_dir` (an experiment file's folder) or the working directory."""
    return _resolve(kind, ref, base_dir, _file_stamp(ref, base_dir))


def _file_stamp(ref: str, base_dir: str | None) -> str | None:
    """The file's content hash, so an edited file is imported again rather than served from cache.
    Hashed once per version of the file (its size and modification time), not on every lookup."""
    path = _file_of(ref, base_dir)
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return _hash_of(path.resolve(), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _hash_of(path: Path, _size: int, _mtime_ns: int) -> str:
    return sha256_of(path)


def _file_of(ref: str, base_dir: str | None) -> Path | None:
    left = ref.rpartition(":")[0]
    if not left.endswith(".py"):
        return None
    path = Path(left).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


@lru_cache(maxsize=None)
def _resolve(kind: str, ref: str, base_dir: str | None, _stamp: str | None) -> Plugin:
    where, _, attr = ref.rpartition(":")
    path = _file_of(ref, base_dir)
    if path is not None:
        if not path.is_file():
            raise UsageError(f"{kind} {ref!r}: no file {path} (a FILE.py:NAME path is relative to "
                             f"{'the experiment file' if base_dir else 'the working directory'})")
        module_name = f"bench_plugin_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UsageError(
                f"{kind} {ref!r}: importing {path} failed: {type(exc).__name__}: {exc}"
            ) from None
        source = {"ref": ref, "path": where, "sha256": sha256_of(path)}
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise UsageError(f"{kind} {ref!r}: no module named {exc.name!r} (use FILE.py:NAME for a "
                                 "file, or install the package)") from None
            raise UsageError(
                f"{kind} {ref!r}: importing {where} failed: ModuleNotFoundError: {exc}"
            ) from None
        except Exception as exc:
            raise UsageError(f"{kind} {ref!r}: importing {where} ({getattr(exc, '__module__', '')}) failed: "
                             f"{type(exc).__name__}: {exc}") from None
        file = Path(module.__file__) if getattr(module, "__file__", None) else None
        source = {"ref": ref, "path": f"{where.replace('.', '/')}.py" if file else where,
                  "sha256": sha256_of(file) if file else None}
    if not hasattr(module, attr):
        defined = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
        raise UsageError(f"{kind} {ref!r}: {where} has no {attr!r} (it defines: "
                         f"{', '.join(defined) or 'nothing'})")
    return Plugin(getattr(module, attr), source)


def entry_points(kind: str) -> list[tuple[str, object, str]]:
    """(name, loaded object, 'distribution (module:attr)') for each installed plug-in of `kind`.

    A plug-in that fails to load is skipped with one warning line: another package's bug must
    not stop bench.
    """
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUPS[kind]):
        origin = f"{ep.dist.name if ep.dist else 'unknown package'} ({ep.value})"
        try:
            found.append((ep.name, ep.load(), origin))
        except Exception as exc:
            print(f"bench: warning: {kind} plug-in {ep.name!r} from {origin} did not load: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return found
