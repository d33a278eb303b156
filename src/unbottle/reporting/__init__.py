"""Turning stored results into things people read: console tables, JSON, markdown and HTML reports.

``summary.build_report`` reads a run and says what it found (``kinds``, ``kinds_work``); ``html``,
``markdown`` and ``output`` render and write it; ``figures*`` draw its charts; ``reproduce`` gives the
command that makes the run again.
"""
