"""Display: units, HTML tables, figures, the report page and its index, and the compare renderers."""
