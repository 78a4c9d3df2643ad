"""Attention variants: *how* a pattern is computed. One module per variant, one class per module.

Modules here are imported by ``harness.core.registry.discover()``, never at ``import variants``.
"""
