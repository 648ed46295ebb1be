"""Evaluation (Sec. 6): white-box attacks (``whitebox``), AutoAttack (``autoattack``), the
gradient-masking audit (``audit``), black-box predictions and the all-or-nothing criterion
(``blackbox``), export (``predictor``), what an evaluation keeps (``records``), its statistics
(``stats``, which loads no TensorFlow, like ``report``) and tables (``report``); ``jobs`` has one
function per job of eval.py."""
