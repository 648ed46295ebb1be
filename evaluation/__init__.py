"""Evaluation (Sec. 6): white-box attacks (``whitebox``), black-box predictions and the
all-or-nothing criterion (``blackbox``), export (``predictor``), what an evaluation keeps
(``records``), its statistics (``stats``) and tables (``report``); ``jobs`` has one function
per job of eval.py."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
