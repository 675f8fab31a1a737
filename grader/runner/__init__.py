"""The runner: the separate process where student code runs, one forked child per run.

Started by the judge (:mod:`grader.judge.sandbox`) as ``python -I -B``, inside the sandbox
where there is one. :mod:`~grader.runner.zygote` imports torch once and forks a child per
request; :mod:`~grader.runner.child` loads the submission (:mod:`~grader.runner.loader`), runs
one probe with a :class:`~grader.runner.context.ProbeContext` and writes the probe's plain data
back. Nothing here imports the judge's side (``grader.judge``, ``grader.report``, ``grader.cli``);
the two sides share :mod:`grader.protocol` and :mod:`grader.wire`.
"""
