"""Report generators: the scripts that make the tables, plots and reports in docs/, and what they share (provenance,
plotting)."""
