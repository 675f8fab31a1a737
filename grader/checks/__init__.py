"""Built-in checks, one module per exercise (named as in :mod:`grader.registry`).

Each module holds the exercise's probes (run in the runner), judges (run in the grading
process), the reference computations the judges compare with, its error hints, and one
``grader_checks(config)`` hook implementation that declares them.
"""
