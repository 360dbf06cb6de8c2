"""The report's sections, in the order ``build.build_report`` composes them; each is a module with
``section(ctx) -> list[str]`` (Markdown lines) that writes its own files through the
:class:`~benchmark.report.context.Context`:

- ``header``: title, provenance, the sweep's overrides, the package versions, how to read the cells;
- ``reproduction``: the paper's table under its authors' own (leaky) protocol beside the clean one, and the
  protocol ablation (experiment ``paper_protocol`` of the same store; the paper report only);
- ``main``: per dataset, the main table (Markdown and LaTeX; the focus model's published numbers on
  top) and the reference predictors' block (``references``);
- ``swept``: the focus model's swept parameters (``meta.swept``): a metric curve over the numeric one
  (DMTL: λ) per variant of the categorical one (DMTL: attention), and the variants' ablation;
- ``significance``: the focus model's best configuration (by validation) against every baseline;
- ``tuning``: the tuned sweep's selection rule, budget and chosen configurations;
- ``secondary``: group-level and cold-start metrics;
- ``catalogue``: full-catalogue ranking metrics;
- ``group_recommendation``: group-item runs (issue #24), one table per dataset, group split and protocol;
- ``ties``: the configurations whose top k the tie rule completed for more than 5 % of queries;
- ``groups``: the groupings' size statistics;
- ``completeness``: every cell whose seeds lack a FINISHED run.
"""
