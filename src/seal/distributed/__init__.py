"""Scaling out: ReST-EM's E-step on Ray workers (`seal train ... --workers N [--address RAY]`).

Only this package imports Ray; ReST-EM sees a function that runs context jobs and yields their records.
"""
