"""The theory tools the book's chapters use: Wasserstein distances (:mod:`~pwgf.theory.wasserstein`), the
Wasserstein gradient flow on particles and its exact projected step (:mod:`~pwgf.theory.flow`), the moments
of ST-type estimates (:mod:`~pwgf.theory.st_moments`), structured relaxations (:mod:`~pwgf.theory.structured`)
and toy problems (:mod:`~pwgf.theory.toys`). They build on the estimator library (:mod:`pwgf`); the
chapters' independent references (POT) come with the ``theory`` extra.
"""
