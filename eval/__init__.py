"""mmaccel's evaluation harness: POPE, MME and Video-MME with lmms-eval's prompts, answer parsing and metrics, and
speed beside accuracy (``mmaccel eval``, ``python -m mmaccel.eval``; see :mod:`mmaccel.eval.cli`).

Modules: ``pope``, ``mme``, ``videomme`` (the tasks), ``video`` (finding videos, sampling frames), ``runner``
(answering and timing, resume, sharding), ``store`` (the JSONL records), ``report`` (table, results.json, plot).
Kept free of imports here so that the task modules can be used without loading a model stack.
"""
