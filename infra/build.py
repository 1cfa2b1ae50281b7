"""Build the functions/ deployment zip: chalicelib + functions + manylinux wheels.

Chalice's packager prints "Could not install dependencies" and still exits 0
when a wheel is missing (psycopg-binary on arm64), shipping a zip that dies at
import time in Lambda. This build fails loudly instead: a pip error, a pinned
requirement absent from the bundle, or an oversized bundle all exit non-zero.
The zip is deterministic (sorted entries, fixed timestamps) so an unchanged
tree yields an unchanged artifact key (byte-compiled with hash-based .pyc and
a fixed source path, so neither mtimes nor the staging directory leak in).
Needs PyPI, except with `--sources-only` (chalicelib + functions, no wheels:
for offline checks, not deployable).

    python -m infra.build [--arch x86_64|arm64] [--out infra/build/functions.zip] [--sources-only]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("chalicelib", "functions")
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
PYTHON_VERSION = "3.11"  # must match infra.template.RUNTIME
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda's hard limit for a zip package
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: Left behind by local runs, editors and tools; never shipped (bytecode is rebuilt in the staging tree).
EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".ymera", ".mypy_cache", ".pytest_cache", ".ruff_cache",
            ".DS_Store", "*.swp", "*~")
#: Where Lambda unpacks the zip: the path tracebacks show, the same on every build machine.
LAMBDA_TASK_ROOT = "/var/task"


class BuildError(RuntimeError):
    """The bundle would not work in Lambda; the message says why."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_names(requirements: Path) -> list[str]:
    """Distribution names required by a flat requirements file (extras stripped)."""
    names = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise BuildError(f"{requirements}: unsupported option line {line!r}; keep it flat")
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match is None:
            raise BuildError(f"{requirements}: cannot parse {line!r}")
        names.append(_normalise(match.group(0)))
    return names


def install_wheels(requirements: Path, target: Path, arch: str) -> None:
    cmd = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
        "--requirement", str(requirements), "--target", str(target),
        "--platform", PLATFORMS[arch], "--only-binary=:all:",
        "--python-version", PYTHON_VERSION, "--implementation", "cp",
    ]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    if subprocess.run(cmd, check=False).returncode != 0:
        raise BuildError(f"pip could not install {requirements} for {PLATFORMS[arch]}: a pinned package has no "
                         f"{PLATFORMS[arch]} wheel for CPython {PYTHON_VERSION} (see pip's output above; "
                         "docs/deploy.md, Troubleshooting)")


def check_installed(target: Path, required: Sequence[str]) -> None:
    """Every pinned distribution must be in the bundle; pip's exit code alone is not trusted."""
    present = {_normalise(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(target)])}
    missing = sorted(set(required) - present)
    if missing:
        raise BuildError(f"missing from the bundle: {', '.join(missing)}")


def copy_sources(target: Path) -> None:
    for name in SOURCES:
        src = ROOT / name
        if not any(src.glob("*.py")):
            raise BuildError(f"{src} has no Python modules; nothing to ship")
        shutil.copytree(src, target / name, ignore=shutil.ignore_patterns(*EXCLUDED))


def precompile(target: Path) -> None:
    """Ship .pyc: /var/task is read-only, so Lambda would otherwise compile on every cold start.

    In a fresh interpreter, one file after another, with a fixed hash seed: marshal's output depends on the
    compiling interpreter's state (reference counts decide which objects are written as back-references,
    the hash seed orders frozenset constants), so compiling in this process or in forked workers made two
    builds of the same tree differ."""
    if sys.version_info[:2] != tuple(int(p) for p in PYTHON_VERSION.split(".")):
        print(f"note: not Python {PYTHON_VERSION}; shipping sources without .pyc", file=sys.stderr)
        return
    # unchecked-hash: no mtimes in .pyc; -s/-p: co_filename is /var/task/..., not the staging directory.
    cmd = [sys.executable, "-I", "-m", "compileall", "-q", "-j", "1", "--invalidation-mode", "unchecked-hash",
           "-s", str(target), "-p", LAMBDA_TASK_ROOT, str(target)]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        raise BuildError("byte-compiling the bundle failed")


def _files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*") if p.is_file())


def write_zip(staging: Path, out: Path) -> int:
    """Write a reproducible zip; return the unzipped size in bytes."""
    total = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in _files(staging):
            info = zipfile.ZipInfo(path.relative_to(staging).as_posix(), date_time=_EPOCH)
            executable = path.stat().st_mode & 0o111
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            zf.writestr(info, data)
    tmp.replace(out)
    return total


def build(out: Path, arch: str, requirements: Path, *, wheels: bool = True) -> Path:
    """`wheels=False`: sources only (offline checks; the zip would not run in Lambda)."""
    required = pinned_names(requirements)
    with tempfile.TemporaryDirectory(prefix="ymera-build-") as tmp:
        staging = Path(tmp)
        if wheels:
            install_wheels(requirements, staging, arch)
            check_installed(staging, required)
        copy_sources(staging)
        precompile(staging)
        size = write_zip(staging, out)
    if size > UNZIPPED_LIMIT:
        out.unlink()
        raise BuildError(f"bundle is {size / 2**20:.0f} MiB unzipped; Lambda allows 250 MiB")
    kind = arch if wheels else "sources only, not deployable"
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB zipped, {size / 2**20:.1f} MiB unzipped, {kind})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.build", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64", help="Lambda architecture")
    parser.add_argument("--out", type=Path, default=ROOT / "infra" / "build" / "functions.zip")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--sources-only", action="store_true",
                        help="chalicelib + functions without wheels (offline; not deployable)")
    args = parser.parse_args(argv)
    try:
        build(args.out, args.arch, args.requirements, wheels=not args.sources_only)
    except BuildError as exc:
        print(f"BUILD FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
