-- Generated from schemas/cluster.py and the definitions it places — do not edit.
-- Cluster mode (store.cluster), for a cluster named flowlogs_cluster and the database flowlogs: each table's replicated
-- shard-local part, the Distributed table over it, and each rollup's view on the shards.
-- TTLs are the defaults; the store applies the configured ones.

CREATE DATABASE IF NOT EXISTS flowlogs ON CLUSTER flowlogs_cluster;

CREATE TABLE IF NOT EXISTS flowlogs.flows_local ON CLUSTER flowlogs_cluster
(
    `version` UInt8 COMMENT 'flow record format version',
    `flow_id` UInt64 COMMENT 'deterministic id of (ENI, 5-tuple, direction, window): replays repeat it',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packets were seen on',
    `vpc_id` LowCardinality(String) COMMENT 'VPC of the ENI, \'-\' when unknown',
    `subnet_id` LowCardinality(String) COMMENT 'subnet of the ENI, \'-\' when unknown',
    `srcaddr` IPv6 COMMENT 'source address (IPv4 stored IPv4-mapped)',
    `dstaddr` IPv6 COMMENT 'destination address',
    `srcport` UInt16 COMMENT 'source port; 0 when the protocol has none',
    `dstport` UInt16 COMMENT 'destination port; ICMP type << 8 | code',
    `protocol` UInt8 COMMENT 'IANA protocol number',
    `packets` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'packets in the window',
    `bytes` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of IP total lengths in the window',
    `start` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'first packet, Unix seconds',
    `end` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'last packet, Unix seconds',
    `window_start` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'start of the aggregation window, Unix seconds',
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / network-ACL verdict (schemas/rules.py)',
    `rule_layer` Enum8('sg' = 1, 'acl' = 2, 'default' = 3) COMMENT 'what decided the action: a security group (sg), a network ACL (acl), or a default (default)',
    `rule_id` LowCardinality(String) COMMENT 'id of the policy or ACL entry that decided; sg/default or <acl-id>/default for a default deny; \'-\' for none',
    `rule_set_version` UInt32 COMMENT 'version of the rule set the verdict was evaluated against (0: none loaded)',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3, 'LATE' = 4) COMMENT 'OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)',
    `tcp_flags` UInt8 COMMENT 'bitwise OR of the TCP flags of the flow\'s packets',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic'
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowlogs/flows', '{replica}')
PARTITION BY toDate(window_start)
ORDER BY (interface_id, window_start, srcaddr, dstaddr, flow_id)
TTL window_start + INTERVAL 15 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS flowlogs.flows ON CLUSTER flowlogs_cluster AS flowlogs.flows_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, flows_local, cityHash64(interface_id));

CREATE TABLE IF NOT EXISTS flowlogs.flows_1m_local ON CLUSTER flowlogs_cluster
(
    `bucket` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'start of the 1m bucket the flow windows started in',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packets were seen on',
    `srcaddr` IPv6 COMMENT 'source address (IPv4 stored IPv4-mapped)',
    `dstaddr` IPv6 COMMENT 'destination address',
    `dstport` UInt16 COMMENT 'destination port; ICMP type << 8 | code',
    `protocol` UInt8 COMMENT 'IANA protocol number',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / network-ACL verdict (schemas/rules.py)',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3, 'LATE' = 4) COMMENT 'OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic',
    `vpc_id` LowCardinality(String) COMMENT 'VPC of the ENI, \'-\' when unknown',
    `subnet_id` LowCardinality(String) COMMENT 'subnet of the ENI, \'-\' when unknown',
    `packets` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' packets',
    `bytes` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' bytes',
    `records` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'number of flow records summed into this row'
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowlogs/flows_1m', '{replica}')
PARTITION BY toDate(bucket)
PRIMARY KEY (interface_id, bucket)
ORDER BY (interface_id, bucket, srcaddr, dstaddr, dstport, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id)
TTL bucket + INTERVAL 7 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS flowlogs.flows_1m ON CLUSTER flowlogs_cluster AS flowlogs.flows_1m_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, flows_1m_local, cityHash64(interface_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS flowlogs.flows_1m_mv ON CLUSTER flowlogs_cluster TO flowlogs.flows_1m_local
AS SELECT
    toStartOfInterval(window_start, INTERVAL 1 MINUTE) AS bucket,
    interface_id,
    srcaddr,
    dstaddr,
    dstport,
    protocol,
    flow_direction,
    action,
    log_status,
    type,
    vpc_id,
    subnet_id,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    count() AS records
FROM flowlogs.flows_local
GROUP BY bucket, interface_id, srcaddr, dstaddr, dstport, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id;

CREATE TABLE IF NOT EXISTS flowlogs.flows_5m_local ON CLUSTER flowlogs_cluster
(
    `bucket` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'start of the 5m bucket the flow windows started in',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packets were seen on',
    `srcaddr` IPv6 COMMENT 'source address (IPv4 stored IPv4-mapped)',
    `dstaddr` IPv6 COMMENT 'destination address',
    `dstport` UInt16 COMMENT 'destination port; ICMP type << 8 | code',
    `protocol` UInt8 COMMENT 'IANA protocol number',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / network-ACL verdict (schemas/rules.py)',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3, 'LATE' = 4) COMMENT 'OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic',
    `vpc_id` LowCardinality(String) COMMENT 'VPC of the ENI, \'-\' when unknown',
    `subnet_id` LowCardinality(String) COMMENT 'subnet of the ENI, \'-\' when unknown',
    `packets` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' packets',
    `bytes` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' bytes',
    `records` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'number of flow records summed into this row'
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowlogs/flows_5m', '{replica}')
PARTITION BY toDate(bucket)
PRIMARY KEY (interface_id, bucket)
ORDER BY (interface_id, bucket, srcaddr, dstaddr, dstport, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id)
TTL bucket + INTERVAL 90 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS flowlogs.flows_5m ON CLUSTER flowlogs_cluster AS flowlogs.flows_5m_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, flows_5m_local, cityHash64(interface_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS flowlogs.flows_5m_mv ON CLUSTER flowlogs_cluster TO flowlogs.flows_5m_local
AS SELECT
    toStartOfInterval(window_start, INTERVAL 5 MINUTE) AS bucket,
    interface_id,
    srcaddr,
    dstaddr,
    dstport,
    protocol,
    flow_direction,
    action,
    log_status,
    type,
    vpc_id,
    subnet_id,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    count() AS records
FROM flowlogs.flows_local
GROUP BY bucket, interface_id, srcaddr, dstaddr, dstport, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id;

CREATE TABLE IF NOT EXISTS flowlogs.flows_1h_local ON CLUSTER flowlogs_cluster
(
    `bucket` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'start of the 1h bucket the flow windows started in',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packets were seen on',
    `protocol` UInt8 COMMENT 'IANA protocol number',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / network-ACL verdict (schemas/rules.py)',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3, 'LATE' = 4) COMMENT 'OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic',
    `vpc_id` LowCardinality(String) COMMENT 'VPC of the ENI, \'-\' when unknown',
    `subnet_id` LowCardinality(String) COMMENT 'subnet of the ENI, \'-\' when unknown',
    `packets` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' packets',
    `bytes` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of the flow records\' bytes',
    `records` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'number of flow records summed into this row'
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/flowlogs/flows_1h', '{replica}')
PARTITION BY toDate(bucket)
PRIMARY KEY (interface_id, bucket)
ORDER BY (interface_id, bucket, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id)
TTL bucket + INTERVAL 365 DAY
SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS flowlogs.flows_1h ON CLUSTER flowlogs_cluster AS flowlogs.flows_1h_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, flows_1h_local, cityHash64(interface_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS flowlogs.flows_1h_mv ON CLUSTER flowlogs_cluster TO flowlogs.flows_1h_local
AS SELECT
    toStartOfInterval(window_start, INTERVAL 1 HOUR) AS bucket,
    interface_id,
    protocol,
    flow_direction,
    action,
    log_status,
    type,
    vpc_id,
    subnet_id,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    count() AS records
FROM flowlogs.flows_local
GROUP BY bucket, interface_id, protocol, flow_direction, action, log_status, type, vpc_id, subnet_id;

CREATE TABLE IF NOT EXISTS flowlogs.window_closes_local ON CLUSTER flowlogs_cluster
(
    `topic` LowCardinality(String) COMMENT 'frames topic',
    `partition` UInt32 COMMENT 'partition of the frames topic',
    `offset` UInt64 COMMENT 'offset of the last frame consumed before the close',
    `target` Int64 COMMENT 'every window with index ≤ target was closed (index = capture time // window_ns)',
    `window_ns` UInt64 COMMENT 'window length the indices refer to',
    `written_at` DateTime DEFAULT now() COMMENT 'when the close was recorded'
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/flowlogs/window_closes', '{replica}')
ORDER BY (topic, partition, offset, target)
TTL written_at + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS flowlogs.window_closes ON CLUSTER flowlogs_cluster AS flowlogs.window_closes_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, window_closes_local, cityHash64(topic, partition));

CREATE TABLE IF NOT EXISTS flowlogs.alerts_local ON CLUSTER flowlogs_cluster
(
    `version` UInt8 COMMENT 'alert record format version',
    `alert_id` String COMMENT 'stable id of the incident: every update of it carries the same id',
    `detector` Enum8('address_scan' = 1, 'port_scan' = 2, 'threat_ip' = 3, 'uncommon_protocol' = 4, 'broadcast_storm' = 5, 'bandwidth_overuse' = 6) COMMENT 'what raised it',
    `severity` Enum8('low' = 1, 'medium' = 2, 'high' = 3, 'critical' = 4) COMMENT 'how urgent',
    `state` Enum8('open' = 1, 'closed' = 2) COMMENT 'open while the incident goes on; closed after its quiet period',
    `updates` UInt32 COMMENT '0 when first raised, +1 each time it is raised again',
    `first_seen` DateTime('UTC') COMMENT 'start of the first flow window that showed it, Unix seconds',
    `last_seen` DateTime('UTC') COMMENT 'end of the latest flow window that showed it, Unix seconds',
    `raised_at` DateTime64(3, 'UTC') COMMENT 'wall-clock time of this update, Unix seconds',
    `vpc_id` LowCardinality(String) COMMENT 'VPC it was seen in, \'-\' when unknown',
    `interface_id` LowCardinality(String) COMMENT 'ENI it concerns, \'-\' when several or none',
    `source` String COMMENT 'the address (or ENI) behind it, \'-\' when none',
    `target` String COMMENT 'what it reached: an address, a port, a list entry; \'-\' when none',
    `summary` String COMMENT 'one line for a person',
    `counts` Map(LowCardinality(String), Float64) COMMENT 'the evidence in numbers (flows, packets, hosts, ports, bps…)',
    `sample_flows` String COMMENT 'up to 5 flows that show it (a JSON array in the table)'
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/flowlogs/alerts', '{replica}', updates)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (alert_id)
TTL last_seen + INTERVAL 365 DAY;

CREATE TABLE IF NOT EXISTS flowlogs.alerts ON CLUSTER flowlogs_cluster AS flowlogs.alerts_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, alerts_local, cityHash64(alert_id));

CREATE TABLE IF NOT EXISTS flowlogs.result_sets_local ON CLUSTER flowlogs_cluster
(
    `name` String COMMENT 'the result set\'s name',
    `kind` Enum8('rewind' = 1, 'snapshot' = 2) COMMENT 'rewind: frames aggregated again; snapshot: live flows frozen',
    `from` DateTime('UTC') COMMENT 'start of the range (capture time / window start), inclusive',
    `to` DateTime('UTC') COMMENT 'end of the range, exclusive',
    `scope` String COMMENT '\'all\', or vpc:ID, subnet:ID, eni:ID',
    `window_seconds` UInt32 COMMENT 'aggregation window of its flow records',
    `rules` String COMMENT 'rewind: the rule set its verdicts come from (\'topic vN\' or a file); snapshot: \'-\'',
    `with_frames` UInt8 COMMENT '1 when its raw packet metadata is kept in saved_packets',
    `flows` UInt64 COMMENT 'flow records it holds',
    `packets` UInt64 COMMENT 'packets its flow records count',
    `created_at` DateTime64(3, 'UTC') COMMENT 'when it was made'
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/flowlogs/result_sets', '{replica}', created_at)
ORDER BY name;

CREATE TABLE IF NOT EXISTS flowlogs.result_sets ON CLUSTER flowlogs_cluster AS flowlogs.result_sets_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, result_sets_local, cityHash64(name));

CREATE TABLE IF NOT EXISTS flowlogs.saved_flows_local ON CLUSTER flowlogs_cluster
(
    `result_set` LowCardinality(String) COMMENT 'the result set the row belongs to',
    `version` UInt8 COMMENT 'flow record format version',
    `flow_id` UInt64 COMMENT 'deterministic id of (ENI, 5-tuple, direction, window): replays repeat it',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packets were seen on',
    `vpc_id` LowCardinality(String) COMMENT 'VPC of the ENI, \'-\' when unknown',
    `subnet_id` LowCardinality(String) COMMENT 'subnet of the ENI, \'-\' when unknown',
    `srcaddr` IPv6 COMMENT 'source address (IPv4 stored IPv4-mapped)',
    `dstaddr` IPv6 COMMENT 'destination address',
    `srcport` UInt16 COMMENT 'source port; 0 when the protocol has none',
    `dstport` UInt16 COMMENT 'destination port; ICMP type << 8 | code',
    `protocol` UInt8 COMMENT 'IANA protocol number',
    `packets` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'packets in the window',
    `bytes` UInt64 CODEC(T64, ZSTD(1)) COMMENT 'sum of IP total lengths in the window',
    `start` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'first packet, Unix seconds',
    `end` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'last packet, Unix seconds',
    `window_start` DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)) COMMENT 'start of the aggregation window, Unix seconds',
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / network-ACL verdict (schemas/rules.py)',
    `rule_layer` Enum8('sg' = 1, 'acl' = 2, 'default' = 3) COMMENT 'what decided the action: a security group (sg), a network ACL (acl), or a default (default)',
    `rule_id` LowCardinality(String) COMMENT 'id of the policy or ACL entry that decided; sg/default or <acl-id>/default for a default deny; \'-\' for none',
    `rule_set_version` UInt32 COMMENT 'version of the rule set the verdict was evaluated against (0: none loaded)',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3, 'LATE' = 4) COMMENT 'OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)',
    `tcp_flags` UInt8 COMMENT 'bitwise OR of the TCP flags of the flow\'s packets',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic'
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowlogs/saved_flows', '{replica}')
PARTITION BY result_set
ORDER BY (result_set, interface_id, window_start, srcaddr, dstaddr, flow_id);

CREATE TABLE IF NOT EXISTS flowlogs.saved_flows ON CLUSTER flowlogs_cluster AS flowlogs.saved_flows_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, saved_flows_local, cityHash64(interface_id));

CREATE TABLE IF NOT EXISTS flowlogs.saved_packets_local ON CLUSTER flowlogs_cluster
(
    `result_set` LowCardinality(String) COMMENT 'the result set the packet belongs to',
    `capture_time_ns` UInt64 COMMENT 'capture time, nanoseconds since the Unix epoch (UTC)',
    `src_addr` IPv6 COMMENT 'source IP address, network byte order; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)',
    `dst_addr` IPv6 COMMENT 'destination IP address, same encoding as src_addr',
    `ip_length` UInt32 COMMENT 'IP total length (IPv4 total length, IPv6 40 + payload length): the flow record\'s bytes',
    `wire_length` UInt32 COMMENT 'length of the packet on the wire (link layer included)',
    `src_port` UInt16 COMMENT 'TCP/UDP/SCTP source port; 0 for other protocols',
    `dst_port` UInt16 COMMENT 'TCP/UDP/SCTP destination port; ICMP/ICMPv6: type << 8 | code; 0 otherwise',
    `interface_id` LowCardinality(String) COMMENT 'ENI the packet was seen on',
    `protocol` UInt8 COMMENT 'IP protocol number (IPv6: the upper-layer header)',
    `tcp_flags` UInt8 COMMENT 'TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN); 0 for non-TCP',
    `direction` UInt8 COMMENT '0 = ingress, 1 = egress, relative to the ENI'
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/flowlogs/saved_packets', '{replica}')
PARTITION BY result_set
ORDER BY (result_set, interface_id, capture_time_ns);

CREATE TABLE IF NOT EXISTS flowlogs.saved_packets ON CLUSTER flowlogs_cluster AS flowlogs.saved_packets_local
ENGINE = Distributed(flowlogs_cluster, flowlogs, saved_packets_local, cityHash64(interface_id));
