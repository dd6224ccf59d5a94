"""The study report: gathering the store, tables, figures and rendering."""
