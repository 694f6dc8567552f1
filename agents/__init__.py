"""The agents of the lab: the AR, MN, HA and DNS agents and the wire formats they speak.

cryptography 51 (what CI installed on 2026-12-06) warns on every import of dnspython's
DNSSEC module, which names the DSA key classes; we never use DSA (docs/protocol.md,
section 3), and the warning on stderr broke the one-line errors the CLI promises.
"""

import warnings

warnings.filterwarnings("ignore", message=r"DSA is deprecated", module=r"dns\.dnssecalgs\.dsa")
