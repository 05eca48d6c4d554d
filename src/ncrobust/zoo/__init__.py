"""Neural Collapse across the public robust-model zoo (RobustBench): load each checkpoint through
the zoo's own loader, measure it like a trained run, and summarise across models.

:mod:`ncrobust.zoo.catalog` names, selects and loads zoo entries (the optional ``robustbench``
package, ``pip install ncrobust[zoo]``); :mod:`ncrobust.zoo.job` measures one model into a
run-like directory; :mod:`ncrobust.study.zoo_summary` writes the cross-model table, rank
correlations, scatter plots and the "model zoo" report section.
"""
