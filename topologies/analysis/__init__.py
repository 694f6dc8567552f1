"""Raw files → numbers, tables, plots and the evaluation report. No root, no lab.
"""
