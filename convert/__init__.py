"""Checkpoint -> bundle: ``pipeline`` (the steps), ``families/`` (per-family
adapters), ``export`` (trace, ONNX, pnnx), ``bundle`` (atomic bundle writing,
``wrap``), ``verify/`` (the parities), ``charts`` (images of results)."""
