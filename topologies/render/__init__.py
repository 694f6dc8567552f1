"""Model → plain data → config text: templates under configs/ filled from the Topology,
and the identities (keys) the lab provisions. Nothing here touches a namespace.
"""
