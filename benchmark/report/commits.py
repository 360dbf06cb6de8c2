"""Which code a report's numbers come from: the ``git_commit`` tags of the runs it used (#23 item 5).

The report's own provenance line names the commit checked out when the report was BUILT; the numbers
were made by the runs, possibly at other commits (a resumed sweep spans commits). ``commit_lines``
lists the distinct ``git_commit`` tags of the runs a report uses, with how many runs each, and flags
a report that mixes code versions.
"""

from __future__ import annotations

import pandas as pd

UNKNOWN = "unknown"  # a run without the tag (git_commit() outside a checkout also writes "unknown")


def run_commits(runs: pd.DataFrame) -> pd.Series:
    """Runs per distinct ``git_commit`` of ``runs`` (a column; missing or empty: ``unknown``), most
    runs first, then by name."""
    column = runs["git_commit"] if "git_commit" in runs else pd.Series(UNKNOWN, index=runs.index)
    commits = column.fillna("").astype(str).replace("", UNKNOWN)
    counts = commits.value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def commit_lines(runs: pd.DataFrame) -> list[str]:
    """The report header's lines on the code versions of its runs; a warning when there are several."""
    counts = run_commits(runs)
    listed = ", ".join(f"`{commit}` ({n} run{'s' if n != 1 else ''})" for commit, n in counts.items())
    lines = [f"Code versions of the {int(counts.sum())} runs used (their `git_commit` tags): {listed}."]
    if len(counts) > 1:
        lines.append(f"**Warning: this report mixes {len(counts)} code versions**: its runs were made by "
                     f"different code, so its numbers may not be comparable; rerun the sweep at one commit "
                     f"(`resume=false`, or a new experiment) to report one version.")
    dirty = [commit for commit in counts.index if commit.endswith("-dirty")]
    if dirty:
        lines.append("`-dirty`: the run's checkout had uncommitted changes, so that commit alone does not "
                     "reproduce it.")
    return lines
