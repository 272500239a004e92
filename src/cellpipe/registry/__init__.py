"""cellpipe.registry: model versions, their signatures, aliases and where they are kept.

`model` holds the values and the `ModelSource` protocol serving uses, `store` the persistence
(schema v4 tables, or memory), `signature` the inference of inputs and outputs, and
`registry` the `ModelRegistry` service. See ARCHITECTURE.md.
"""
