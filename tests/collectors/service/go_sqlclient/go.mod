module agentwatch.test/go_sqlclient

go 1.19

require github.com/ClickHouse/clickhouse-go/v2 v2.13.4
