"""Reference solutions, registered with the grader as a plugin like any submission.

Each file can also be graded as a submission folder: ``grade reference/``.
"""
