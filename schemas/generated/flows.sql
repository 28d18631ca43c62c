CREATE TABLE IF NOT EXISTS flows
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
    `action` Enum8('ACCEPT' = 1, 'REJECT' = 2) COMMENT 'security-group / ACL verdict',
    `log_status` Enum8('OK' = 1, 'NODATA' = 2, 'SKIPDATA' = 3) COMMENT 'OK, NODATA (no traffic) or SKIPDATA (packets lost)',
    `tcp_flags` UInt8 COMMENT 'bitwise OR of the TCP flags of the flow\'s packets',
    `flow_direction` Enum8('ingress' = 1, 'egress' = 2) COMMENT 'relative to the ENI',
    `type` Enum8('IPv4' = 4, 'IPv6' = 6) COMMENT 'IP version of the traffic'
)
ENGINE = MergeTree
PARTITION BY toDate(window_start)
ORDER BY (interface_id, window_start, srcaddr, dstaddr, flow_id)
TTL window_start + INTERVAL 15 DAY
SETTINGS non_replicated_deduplication_window = 10000;
