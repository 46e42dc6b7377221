"""``steerunc calibrate``, ``calibrate-prior``, ``evaluate`` and ``triage``: the judging wing on the command line.

They read scored JSONL from ``steerunc score`` or any other system and never
load a model (torch is loaded only while netcal fits beta or temperature
scaling). stdout carries only the product (a calibrator or prior JSON when no
``-o`` is given, or ``--json`` output); tables and summaries go to stderr.
Every file is written to a temporary file and renamed, so a failure leaves
nothing half-written. One module per command (:mod:`steerunc.cli.calibrate`,
:mod:`steerunc.cli.evaluate`, :mod:`steerunc.cli.triage`); this one gathers
them for registration.
"""

from __future__ import annotations

from steerunc.cli.calibrate import calibrate, calibrate_prior
from steerunc.cli.evaluate import evaluate
from steerunc.cli.triage import triage

__all__ = ["COMMANDS", "calibrate", "calibrate_prior", "evaluate", "triage"]

COMMANDS = [calibrate, calibrate_prior, evaluate, triage]
