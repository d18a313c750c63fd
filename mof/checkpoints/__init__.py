"""Checkpoints, which may come from elsewhere: one home for everything that reads, writes or rebuilds them.

- `files`: read safely (restricted unpickling, DeepSpeed ZeRO folders consolidated) and write atomically.
- `layout`: the on-disk weight names: each wrapper's prefix as a named constant, older versions' names.
- `rebuild`: a model from a training checkpoint; a previous run's projectors copied into a new model.
- `resume`: which checkpoint `resume=` means, RNG states, what a resume checkpoint keeps.
- `export`: a checkpoint as a `save_pretrained` folder (`python -m mof.checkpoints.export`).

Nothing is imported here, so that `import mof` (which registers the layout with transformers) stays light.
"""
