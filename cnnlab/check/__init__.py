"""`cnnlab data check`: duplicates and leakage across splits, unreadable and odd files, class balance, and
suspected label errors, found in an image folder without training (docs/data_check.md)."""

from .core import CheckOptions, CheckResult, run_check
from .output import format_table, to_json, write_outputs

__all__ = ["CheckOptions", "CheckResult", "format_table", "run_check", "to_json", "write_outputs"]
