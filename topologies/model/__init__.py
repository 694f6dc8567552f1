"""YAML → typed model → address plan: the first room of the flow.

Everything later reads the Topology built here; nothing here starts a process.
"""

from .errors import TopologyError
from .topology import (
    HOME_TLD,
    ISP_ZONE,
    Cluster,
    DhcpPolicy,
    Interface,
    Link,
    Mobile,
    Node,
    Role,
    Topology,
    build,
    fqdn,
    load,
)

__all__ = [
    "HOME_TLD", "ISP_ZONE", "Cluster", "DhcpPolicy", "Interface", "Link", "Mobile", "Node",
    "Role", "Topology", "TopologyError", "build", "fqdn", "load",
]
