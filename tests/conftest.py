"""Shared fixtures: the real data folder, a temporary tracking store, composed Hydra configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from benchmark.data import itmrec, ml100k, resolve_root
from benchmark.core.errors import DataError

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def data_root() -> Path:
    """GROUPBENCH_DATA (CI: ../shared/data), else ../shared/data beside the checkout, else the
    user cache the runner downloads into (~/.cache/groupbench)."""
    root = os.environ.get("GROUPBENCH_DATA")
    if root:
        return Path(root).resolve()
    shared = (REPO.parent / "shared" / "data").resolve()
    return shared if shared.is_dir() else resolve_root(None)


@pytest.fixture(scope="session", autouse=True)
def protocol_cache_dir(tmp_path_factory) -> Path:
    """The protocol cache (benchmark/data/cache.py) of every run in the tests: one fresh folder per
    session, never the user's ~/.cache (subprocesses inherit it through the environment)."""
    folder = tmp_path_factory.mktemp("protocol-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GROUPBENCH_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real datasets; on a fresh machine they are downloaded (checksummed) into the cache."""
    root = data_root()
    try:
        ml100k.fetch(root, download_missing=True)
        itmrec.fetch(root, download_missing=True)
    except DataError as exc:
        pytest.fail(f"real datasets unavailable under {root} ({exc}); set GROUPBENCH_DATA to the folder "
                    f"holding ml-100k/ and itm-rec/ (CI sets ../shared/data)")
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
