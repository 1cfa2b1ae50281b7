"""The functions bundle (infra/build.py): reproducible, clean, loud about missing wheels, importable.

Offline: the source part is built for real (`wheels=False`); pip is faked where a wheel is involved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import build as build_module
from infra import manifest
from infra.build import BuildError, build

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.txt"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_building_twice_gives_the_same_bytes_in_this_process_and_a_fresh_one(tmp_path: Path) -> None:
    first = build(tmp_path / "a.zip", "x86_64", REQUIREMENTS, wheels=False)
    import moto  # noqa: F401 - change this interpreter's state (interned strings, refcounts) between builds

    second = build(tmp_path / "b.zip", "x86_64", REQUIREMENTS, wheels=False)
    result = subprocess.run([sys.executable, "-m", "infra.build", "--sources-only", "--out", str(tmp_path / "c.zip")],
                            cwd=ROOT, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert result.returncode == 0, result.stderr
    assert _sha(first) == _sha(second) == _sha(tmp_path / "c.zip")
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    pycs = [i.filename for i in infos if i.filename.endswith(".pyc")]
    if sys.version_info[:2] == (3, 11):  # precompiled only for the Lambda runtime's Python
        assert "functions/__pycache__/agent_consumer.cpython-311.pyc" in pycs


def test_what_local_runs_leave_behind_is_not_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path / "repo"
    for name in build_module.SOURCES:
        shutil.copytree(ROOT / name, fake_root / name, ignore=shutil.ignore_patterns(*build_module.EXCLUDED))
    junk = [fake_root / "chalicelib" / "__pycache__" / "stale.cpython-311.pyc",  # source deleted since
            fake_root / "functions" / "old.pyc", fake_root / "chalicelib" / ".ymera" / "jwt-secret",
            fake_root / "functions" / ".mypy_cache" / "x.json", fake_root / "chalicelib" / "notes.py~"]
    for path in junk:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("junk")
    monkeypatch.setattr(build_module, "ROOT", fake_root)
    with zipfile.ZipFile(build(tmp_path / "out.zip", "x86_64", REQUIREMENTS, wheels=False)) as zf:
        names = zf.namelist()
    assert "functions/migrate.py" in names
    for path in junk:
        assert path.relative_to(fake_root).as_posix() not in names
    assert not [n for n in names if ".ymera/" in n or "_cache/" in n or "stale" in n or n.endswith("~")]
    assert not [n for n in names if n.endswith(".pyc") and "/__pycache__/" not in n]


def _fake_pip(returncode: int, installs: list[str]) -> Any:
    """Stands in for `pip install --platform ...`: exits with `returncode`, installing only `installs`."""
    real_run = subprocess.run

    def run(cmd: list[str], **kwargs: Any) -> Any:
        if cmd[1:3] != ["-m", "pip"]:
            return real_run(cmd, **kwargs)  # compileall
        target = Path(cmd[cmd.index("--target") + 1])
        for name in installs:
            info = target / f"{name}-1.0.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        if returncode:
            print("ERROR: No matching distribution found for google-re2==1.1.20251105", file=sys.stderr)
        return subprocess.CompletedProcess(cmd, returncode)

    return run


def test_a_missing_manylinux_wheel_fails_the_build_naming_the_platform(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_module.subprocess, "run", _fake_pip(1, []))
    out = tmp_path / "functions.zip"
    with pytest.raises(BuildError, match="manylinux2014_aarch64 wheel for CPython 3.11"):
        build(out, "arm64", REQUIREMENTS)
    assert not out.exists()
    assert build_module.main(["--arch", "arm64", "--out", str(out)]) == 1


def test_pip_saying_success_without_installing_a_pin_still_fails(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Chalice's packager prints "Could not install dependencies" and exits 0; this build does not trust pip."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("redis==8.1.0\npsycopg[binary]==3.3.9  # the one without a wheel\n")
    monkeypatch.setattr(build_module.subprocess, "run", _fake_pip(0, ["redis"]))
    with pytest.raises(BuildError, match="missing from the bundle: psycopg"):
        build(tmp_path / "functions.zip", "x86_64", requirements)
    assert not (tmp_path / "functions.zip").exists()


def test_the_bundles_handlers_import_in_a_fresh_interpreter_with_a_clean_environment(tmp_path: Path) -> None:
    """The zip's own chalicelib/functions (not the checkout's), no YMERA_* or AWS settings, no PYTHONPATH:
    what a cold start does before the first event. Dependencies come from this venv (the wheels are PyPI's)."""
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(build(tmp_path / "f.zip", "x86_64", REQUIREMENTS, wheels=False)) as zf:
        zf.extractall(unpacked)
    handlers = sorted({spec.handler for spec in manifest.functions()})
    code = "\n".join([
        "import importlib, sys",
        "sys.path.insert(0, '.')",
        f"for dotted in {handlers!r}:",
        "    module, _, attr = dotted.rpartition('.')",
        "    mod = importlib.import_module(module)",
        "    assert callable(getattr(mod, attr)), dotted",
        "    assert mod.__file__.startswith(sys.argv[1]), mod.__file__  # the bundle's, not the checkout's",
        f"print('imported', {len(handlers)})",
    ])
    result = subprocess.run([sys.executable, "-I", "-c", code, str(unpacked)], cwd=unpacked, capture_output=True,
                            text=True, check=False, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"imported {len(handlers)}" in result.stdout
