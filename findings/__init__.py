"""The experiment layer: a grid of runs from one YAML file (grid.py), the tables gathered from them (tables.py),
the rule that decides each of the paper's findings (rules.py), the figures (figures.py) and the report
(report.py), laid out in the grid directory as layout.py says."""
