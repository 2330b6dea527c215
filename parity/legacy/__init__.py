"""The legacy runner: runs the legacy Keras QARAC and returns what it computed as data (`parity.results`).

The only part of `parity` that imports TensorFlow (and `legacy_keras`); everything
else compares results, runs the port, or reads and writes bundles, and never
needs it (tests/test_layout.py holds this).

    record      `record_legacy`: every legacy result one run needs, as a `LegacyRun`
    tensors     batches to TF tensors, outputs to numpy, gradients by tape (eager or traced)
    capture     the legacy's stages captured from its real call, and its per-stage backward
    float64     the legacy built and run in float64
    training    K steps of the legacy's `fit` on the original's input pipeline
"""
