"""Scenarios: scripted experiments on a running lab that write their raw files first,
then hand them to the analysis room.
"""
