"""Official models: converters from the official repositories' checkpoints to genarena's modules.

Each module here knows one official codebase's state-dict layout (key names, shapes, which tensors are
fused or transposed) and turns a released checkpoint into the config and state dict of the matching
genarena tokenizer or generator, built with its ``official`` architecture options. Nothing here
imports the official code: the golden fixtures under ``tests/fixtures/official/`` pin the conversions
against outputs of that code.

Tokenizers (each ``convert_*(state_dict) -> (tokenizer config, state dict)``, ``load_official_*(path)`` for the
released file; a wrong or truncated state dict raises one :class:`~genarena.errors.CheckpointError` naming
the missing, unexpected and mis-shaped keys):

- :mod:`.var_vqvae`: VAR's VQVAE -> ``msvq`` (``conf/tokenizer/var_vqvae.yaml``); ``convert_var_quantizer``
  converts its ``VectorQuantizer2`` alone into a ``MultiScaleResidualQuantizer``.
- :mod:`.mar_kl`: MAR's KL-16 -> ``kl`` (``conf/tokenizer/mar_kl16.yaml``).
- :mod:`.llamagen_vq`: LlamaGen's VQ-16 -> ``vq`` (``conf/tokenizer/llamagen_vq16.yaml``).
"""
