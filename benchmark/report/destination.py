"""Where ``python -m benchmark.report`` writes, and how its header names the store: an ad-hoc report
never overwrites a shipped one, and a shipped one names one clean commit (README, "Report").

* Default ``--out``: ``outputs/reports/<experiment>/`` under the start folder; ``outputs/`` is
  git-ignored (Hydra's run folders live there too), so an ad-hoc report leaves ``git status`` clean.
* A folder git would track (inside a checkout, not ignored: ``reports/paper``) is written only from a
  checkout without uncommitted code changes (:func:`benchmark.tracking.tracker.uncommitted`; the
  shipped reports themselves do not count), so its header's commit is clean; else one line, exit 2.
* The header names a store inside the checkout by its path relative to the checkout's root.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmark.core.config import REPO
from benchmark.core.errors import ConfigError
from benchmark.report.results import safe_name
from benchmark.tracking.tracker import uncommitted

AD_HOC = Path("outputs") / "reports"  # git-ignored (.gitignore: outputs/)


def default_out(experiment: str) -> Path:
    """``outputs/reports/<experiment>`` (a name is never a path)."""
    return AD_HOC / safe_name(experiment)


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing parent folder (git needs a folder to run in)."""
    existing = folder.absolute()
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    return existing


def tracked_by_git(folder: Path) -> Path | None:
    """The root of the git checkout that would track files written into ``folder`` (inside it and not
    ignored), else None (outside any checkout, or ignored)."""
    try:
        cwd = _existing(folder)
        top = _git(cwd, "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            return None
        root = Path(top.stdout.strip())
        relative = folder.absolute().relative_to(root)
        probe = (relative / "report.md").as_posix()  # a file written there: ignored by a folder rule or not
        return None if _git(root, "check-ignore", "-q", probe).returncode == 0 else root
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def check_out(folder: Path, experiment: str) -> Path:
    """``folder`` unless git would track it and its checkout has uncommitted code changes: then one
    line naming the folder, the changed files and the two fixes."""
    root = tracked_by_git(folder)
    if root is None:
        return folder
    try:
        changed = uncommitted(root)
    except (OSError, subprocess.SubprocessError):
        return folder
    if changed:
        files = ", ".join(line[3:] for line in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3
                                                               else "")
        raise ConfigError(f"--out {folder} is tracked by git in {root}, which has uncommitted changes ({files}): a "
                          f"shipped report names one clean commit; commit or stash them first, or leave --out out "
                          f"for an ad-hoc report in {default_out(experiment)}/ (git-ignored)")
    return folder


def shown_store(uri: str) -> str:
    """The store as the report's header names it: a sqlite file inside the checkout by its path
    relative to the checkout's root (``sqlite:///reports/mlflow.db``, relative to the repository), else ``uri``."""
    if not uri.startswith("sqlite:///"):
        return uri
    path = Path(uri[len("sqlite:///"):])
    try:
        return f"sqlite:///{path.resolve().relative_to(REPO.resolve()).as_posix()} (relative to the repository root)"
    except ValueError:
        return uri
