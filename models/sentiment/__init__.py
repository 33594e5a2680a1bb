"""The story- and entity-level sentiment classifier's life cycle: the training recipe
(:mod:`.config`, :mod:`.train_options`), its data (:mod:`.data`, :mod:`.entities`,
:mod:`.soft_labels`, :mod:`.teacher`), training (:mod:`.train`, :mod:`.checkpoint`), evaluation
and the gate (:mod:`.evaluate`, :mod:`.lexicon`), the registry and model card (:mod:`.registry`,
:mod:`.card`), serving (:mod:`.predict`, on a backend of :mod:`newspulse.models.backends`) and
the throughput benchmark (:mod:`.bench`).
"""
