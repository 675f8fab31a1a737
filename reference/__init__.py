"""Reference solutions, installed as ``grader.reference`` and called through :func:`grader.plugins.reference_hooks`.

Each file can also be graded as a submission folder: ``grade reference/``.
"""
