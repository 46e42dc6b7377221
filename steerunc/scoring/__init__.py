"""The scoring wing: the only place that touches a model (needs torch).

A model (:mod:`.model`, :mod:`.registry`) and K steering vectors (:mod:`.vectors`)
give K+1 views of each record in one pass (:mod:`.views`, the only module with
forward hooks); :mod:`.divergence` and :mod:`.fusion` turn their distributions
into scores, a readout (:mod:`.readouts`, one class per mode) turns those into
:class:`~steerunc.records.ScoredRecord`, and :mod:`.scorer` batches it all.

This ``__init__`` imports nothing, so ``steerunc.scoring.registry`` can be read
without loading torch.
"""
