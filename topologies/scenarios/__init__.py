"""Scenarios: scripted experiments on a running lab that write their raw files first,
then hand them to the analysis room. One module per scenario, each registering itself
(registry.py); base.py is what they share, traffic.py their traffic and traceroute.
"""
