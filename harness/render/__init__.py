"""Display: units, labels and sentences, HTML tables, figures, the report page and its index, and the
compare and gate renderers."""
