"""The validation suite: every effective model against discrete GD on benchmark cases.

>>> from effdyn.validation import validate, case_names
>>> result = validate(["minimal-valley"], quick=True, out_dir="effdyn-output")  # doctest: +SKIP
>>> result.report                                                             # doctest: +SKIP
PosixPath('effdyn-output/report.md')

The same runs are available from the command line as ``effdyn validate``. Cases live in
:mod:`effdyn.validation.cases`, running and saving in :mod:`effdyn.validation.runner`,
the markdown report in :mod:`effdyn.validation.report`.
"""

from .cases import CASES, Case, ModelSpec, Setup, UnknownCaseError, case_names, default_models, get_case, mlp_problem
from .report import HANDOVER_COLUMNS, TABLE_COLUMNS, parse_tables, render_report, write_report
from .runner import (CaseInterrupted, CaseResult, ModelResult, ValidationInterrupted, ValidationResult, case_dataset,
                     run_case, run_setup, validate)

__all__ = ["CASES", "Case", "ModelSpec", "Setup", "UnknownCaseError", "case_names", "default_models", "get_case",
           "mlp_problem", "parse_tables", "render_report", "write_report", "TABLE_COLUMNS", "HANDOVER_COLUMNS",
           "CaseInterrupted", "CaseResult",
           "ModelResult", "ValidationInterrupted", "ValidationResult", "case_dataset", "run_case", "run_setup",
           "validate"]
