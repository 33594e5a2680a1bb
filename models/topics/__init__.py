"""The topic classifier: the model (:mod:`.model`, with its bundled artefact in ``bundled/``), its
training (:mod:`.train`), evaluation (:mod:`.evaluate`) and the store-wide re-tagging
(:mod:`.rescore`).
"""
