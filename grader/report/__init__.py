"""Reporters: the terminal summary, the HTML report and Gradescope's ``results.json``.

Each is a plugin implementing ``grader_report(report, config)``; all of them read the plain
records of :mod:`grader.results` only, through the shared helpers of :mod:`~grader.report.formatting`.
"""
