"""Flow Logs: full-flow, non-intrusive network flow logs.

The packages beside this one hold the architecture: ``schemas`` (every wire and table
format), ``agents`` (capture → packet-metadata frames → Kafka), ``pipeline`` (Faust worker:
windows, flow records, sinks) and ``deploy`` (local broker, deployment files). This package
holds what they share: settings, errors and the ``flowlogs`` command.
"""

__version__ = "0.1.0"
