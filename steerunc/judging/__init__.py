"""The judging wing: calibrate, evaluate and triage scored records. Never imports torch.

It works on any scored JSONL (:mod:`steerunc.scored`), from ``steerunc score``
or any other system: calibrators (:mod:`.calibration`, the scikit-learn
contract), metrics (:mod:`.metrics`, a pure NumPy core), evaluation and plots,
and triage thresholds with their guarantees (:mod:`.triage`).
``tests/test_layout.py`` imports every module here and checks torch stays out.
"""
