"""The inference backends of the sentiment classifier: one interface (:mod:`.base`), one file per
backend (:mod:`.torch`, :mod:`.onnx`, :mod:`.cuda_batched`) and one factory (:mod:`.factory`)
that picks the backend for a model folder from the device, quantisation and engine settings.
"""
