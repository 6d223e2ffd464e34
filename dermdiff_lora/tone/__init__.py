"""Skin tone: the ITA estimator, synthetic lesion images of known tone, the dataset audit, verified rebalancing, tone fidelity.

May import ``core``, ``adapters``, ``data``, ``generation`` and ``training``.
"""
