"""Shared fixtures: the real data folder, a temporary tracking store, composed Hydra configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def data_root() -> Path:
    """GROUPBENCH_DATA (CI: ../shared/data), else ../shared/data beside the checkout."""
    root = os.environ.get("GROUPBENCH_DATA")
    return Path(root).resolve() if root else (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = data_root()
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.fail(f"real datasets not found under {root}: set GROUPBENCH_DATA to the folder holding "
                    f"ml-100k/ and itm-rec/ (CI sets ../shared/data)")
    return root


@pytest.fixture
def data_copy(real_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the data folder, for corrupting files in tests."""
    target = tmp_path / "data"
    shutil.copytree(real_data, target, ignore=shutil.ignore_patterns("u[0-9ab]*.base", "u[0-9ab]*.test"))
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tracking_uri: str):
    """Compose the project's Hydra config with overrides, pointed at a temp tracking store."""
    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=[f"tracking.uri={tracking_uri}",
                                                            f"data.root={data_root()}", *overrides])
    return _compose
