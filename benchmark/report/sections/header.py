"""The report's head: title, provenance, the sweep's overrides, the package versions, how to read a cell."""

from __future__ import annotations

from benchmark.core import models_meta
from benchmark.report.context import Context
from benchmark.tracking import provenance

# Distributions named in the header; the models' own (``meta.packages``) follow torch.
PACKAGES = ("torch", "mlflow", "numpy", "pandas", "scipy", "scikit-learn", "hydra-core")


def package_versions() -> str:
    """The report's header line: the versions of the report's packages installed (those missing left out)."""
    names = (PACKAGES[0], *models_meta.packages(), *PACKAGES[1:])
    found = provenance.package_versions(names)
    return ", ".join([f"Python {found['version.python']}"] + [f"{name} {found[f'version.{name}']}" for name in names
                                                              if found[f"version.{name}"] != "not installed"])


def sweep_overrides(client, parent_run_id: str | None) -> str:
    """The command-line overrides of the latest sweep invocation (its parent run's ``overrides`` param)."""
    if not parent_run_id:
        return "(no sweep parent run)"
    data = client.get_run(parent_run_id).data
    # a param today; a tag if sweep bookkeeping moves to tags
    text = str(data.params.get("overrides") or data.tags.get("overrides") or data.tags.get("sweep.overrides")
               or "").strip()
    return f"`{text}`" if text and text != "(none)" else "none"


def header_lines(client, parent_run_id: str | None) -> list[str]:
    return [f"Sweep overrides (latest sweep run): {sweep_overrides(client, parent_run_id)}.",
            f"Package versions (environment that wrote this report): {package_versions()}."]


def section(ctx: Context) -> list[str]:
    col = ctx.col
    ran = set(col.all_runs["model"]) if "model" in col.all_runs else set()
    references = ", ".join(m.replace("_", " ") for m in models_meta.reference_predictors() if m in ran) or "none ran"
    return [f"# Benchmark report: experiment `{ctx.experiment}`", "", *ctx.prov.lines(), "", *ctx.header, "",
            ("Cells are mean ± sample std (ddof=1) over seeds, with the number of seeds n in brackets; "
             if ctx.show_n else f"Cells are mean ± sample std (ddof=1) over n = {col.expected_seeds} seed(s) each; ")
            + f"‡ marks n below the expected {col.expected_seeds} seed(s) ({col.expected_source}). The best mean per "
            "column is in bold; ↑ = higher is better, ↓ = lower is better. RMSE and MAE are pooled over all test "
            f"pairs (`rmse`); the per-user RMSE (`user_rmse`) is named as such. Runs: the latest FINISHED "
            f"run per config_hash among the experiment's job runs. Reference predictors ({references}) "
            f"are in their own block per dataset, never in bold.", ""]
