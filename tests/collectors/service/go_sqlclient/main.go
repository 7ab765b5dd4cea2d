// Command go_sqlclient runs SQL through clickhouse-go v2 over HTTP, the driver of Grafana's
// ClickHouse data source, so the tests exercise agentwatch's SQL endpoint with the real client.
//
// Stdin: a JSON list of SQL strings. Stdout: a JSON list with, per query, the column names, the
// row count, up to five rows (values printed with fmt), or the error the driver returned.
// A connection failure is printed as {"connect_error": ...} and exits 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

type result struct {
	SQL     string     `json:"sql"`
	Columns []string   `json:"columns,omitempty"`
	Rows    int        `json:"rows"`
	Sample  [][]string `json:"sample,omitempty"`
	Error   string     `json:"error,omitempty"`
}

func run(ctx context.Context, conn clickhouse.Conn, sql string) result {
	out := result{SQL: sql}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	out.Columns = rows.Columns()
	for rows.Next() {
		values := make([]any, len(types))
		for i, column := range types {
			values[i] = reflect.New(column.ScanType()).Interface()
		}
		if err := rows.Scan(values...); err != nil {
			out.Error = err.Error()
			return out
		}
		if out.Rows < 5 {
			printed := make([]string, len(values))
			for i, value := range values {
				printed[i] = fmt.Sprint(reflect.ValueOf(value).Elem().Interface())
			}
			out.Sample = append(out.Sample, printed)
		}
		out.Rows++
	}
	if err := rows.Err(); err != nil {
		out.Error = err.Error()
	}
	return out
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8124", "HOST:PORT of the SQL endpoint")
	user := flag.String("user", "default", "user name (ignored by agentwatch)")
	password := flag.String("password", "", "password: an agentwatch token with the sql scope")
	database := flag.String("database", "default", "default database")
	gzipped := flag.Bool("gzip", true, "ask for gzip responses, as the Grafana plugin does over HTTP")
	flag.Parse()

	var queries []string
	if err := json.NewDecoder(os.Stdin).Decode(&queries); err != nil {
		fmt.Fprintln(os.Stderr, "stdin must be a JSON list of SQL strings:", err)
		os.Exit(2)
	}
	options := &clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{*addr},
		Auth:        clickhouse.Auth{Database: *database, Username: *user, Password: *password},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second,
	}
	if *gzipped {
		options.Compression = &clickhouse.Compression{Method: clickhouse.CompressionGZIP}
	}
	ctx := context.Background()
	encoder := json.NewEncoder(os.Stdout)
	conn, err := clickhouse.Open(options)
	if err == nil {
		err = conn.Ping(ctx)
	}
	if err != nil {
		_ = encoder.Encode(map[string]string{"connect_error": err.Error()})
		os.Exit(1)
	}
	defer conn.Close()
	results := make([]result, 0, len(queries))
	for _, sql := range queries {
		results = append(results, run(ctx, conn, sql))
	}
	_ = encoder.Encode(results)
}
