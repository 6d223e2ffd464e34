"""Training data: dataset indexing and transforms, deterministic sharded sampling, tone × diagnosis balance, the latent/embedding cache.

May import ``core`` and ``adapters``.
"""
