"""Streaming threat detection on closed flow windows.

``detectors.Detectors`` runs every detector on the flow records of each written batch and
turns their findings into alerts (``alarms.AlertBook``). One module per detector:
``scans`` (address and port scans), ``threat_ips`` (with ``threat_lists``), ``uncommon``
(protocols outside an ENI's baseline), ``storms`` (broadcast/multicast), ``bandwidth``
(overuse of a limit or a baseline). ``batch`` holds what they share.
"""
