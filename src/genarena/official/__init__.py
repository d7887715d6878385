"""Official models: converters from the official repositories' checkpoints to genarena's modules.

Each module here knows one official codebase's state-dict layout (key names, shapes, which tensors are
fused or transposed) and turns a released checkpoint into the config and state dict of the matching
genarena tokenizer or generator, built with its ``official`` architecture options. Nothing here
imports the official code: the golden fixtures under ``tests/fixtures/official/`` pin the conversions
against outputs of that code.
"""
