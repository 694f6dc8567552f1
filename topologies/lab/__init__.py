"""Rendered configs → running daemons and agents: namespaces, links, the radio, the DNS
plane, the anchored plane, health. A lab is a context manager that always cleans up.
"""
