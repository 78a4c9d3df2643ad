"""attnbench: benchmark and compare self-attention implementations.

Importing this package has no side effects: no logging set-up, no torch flags, no hardware probing,
and variants are discovered only when ``harness.registry.discover()`` is called.
"""

__version__ = "0.1.0"
