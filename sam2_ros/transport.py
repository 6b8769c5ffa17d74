"""What the node can know about the middleware carrying its frames: the Fast DDS shared-memory
segment size of the participant profile it runs with (config/fastdds_profile.xml: 32 MiB).

A best-effort frame larger than that segment cannot travel by shared memory; it goes by UDP in
fragments, and one lost fragment loses the frame. The node warns when frames come close to the
segment and counts the losses the middleware reports (README, "Large images").
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

FASTDDS_DEFAULT_SEGMENT = 512 * 1024  # Fast DDS's own shared-memory segment without a profile
_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def shm_segment_bytes(environ: dict[str, str] | None = None) -> int | None:
    """The shared-memory segment size (bytes) of the profile file named by the environment:
    the largest ``segment_size`` of an SHM transport in it; Fast DDS's default when no profile
    is given; None when the RMW is not Fast DDS or the file cannot be read."""
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if "fastrtps" not in rmw and "fastdds" not in rmw:
        return None
    path = next((env[v] for v in _PROFILE_VARIABLES if env.get(v)), "")
    if not path:
        return FASTDDS_DEFAULT_SEGMENT
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    sizes = []
    for desc in root.iter():
        if desc.tag.rsplit("}", 1)[-1] != "transport_descriptor":
            continue
        fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in desc}
        if fields.get("type") == "SHM":
            try:
                sizes.append(int(fields.get("segment_size", FASTDDS_DEFAULT_SEGMENT)))
            except ValueError:
                return None
    return max(sizes) if sizes else FASTDDS_DEFAULT_SEGMENT
