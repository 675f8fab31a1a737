"""The judge: the grading process, which decides every verdict from plain data.

:mod:`~grader.judge.engine` plans the checks and grades a folder; it reads the submission
(:mod:`~grader.judge.loading`), sends requests to a runner process through
:class:`~grader.judge.runners.Runner` (started in the sandbox by :mod:`~grader.judge.sandbox`)
and turns each reply into verdicts (:mod:`~grader.judge.verdicts`). Nothing here imports the
runner's modules; the runner is started by name and spoken to through :mod:`grader.protocol`.
"""
