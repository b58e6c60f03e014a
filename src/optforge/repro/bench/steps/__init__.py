"""Step cases of the ``step`` section, one module per call form of the optimizers.

Each module registers its optimizers with
:func:`optforge.repro.bench.step_time.register_step`; the modules are discovered when the suite
runs. To time a new optimizer, add a block to the module of its call form (or a new module).
"""

__all__: list[str] = []
