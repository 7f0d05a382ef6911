#!/bin/bash
# Which statements the queue spends its time in: a private Postgres 15 cluster (port 5499, under
# /tmp/pgss, autovacuum off) with pg_stat_statements, `minion bench queue --jobs 50000` on it, then
# the top statements by total execution time. Run as root from the repository root after a build;
# the cluster is stopped at the end. Figures in BENCHMARKS.md (issue 15).
set -e
B=/usr/lib/postgresql/15/bin
D=/tmp/pgss
rm -rf $D; mkdir -p $D; chown postgres $D
su postgres -c "$B/initdb -D $D/data -A trust -U postgres >/dev/null"
cat >> $D/data/postgresql.conf <<CONF
port = 5499
listen_addresses = '127.0.0.1'
unix_socket_directories = '$D'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
autovacuum = off
CONF
su postgres -c "$B/pg_ctl -D $D/data -l $D/log -w start >/dev/null"
psql -q -h 127.0.0.1 -p 5499 -U postgres -c "CREATE DATABASE q" -c "" postgres
psql -q -h 127.0.0.1 -p 5499 -U postgres -d q -c "CREATE EXTENSION pg_stat_statements"
export DATABASE_URL=postgres://postgres@127.0.0.1:5499/q
cd /work/main
target/debug/minion migrate >/dev/null
psql -q -h 127.0.0.1 -p 5499 -U postgres -d q -c "SELECT pg_stat_statements_reset()" >/dev/null
uptime
MINION_LOG=warn target/debug/minion bench queue --jobs 50000 --latency-jobs 50 --output /tmp/pgss/queue.json 2>&1 | grep -v WARN | tail -5
psql -h 127.0.0.1 -p 5499 -U postgres -d q -c "SELECT calls, round(total_exec_time::numeric,0) AS total_ms, round(mean_exec_time::numeric,3) AS mean_ms, rows, round((100*total_exec_time/sum(total_exec_time) over ())::numeric,1) AS pct, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
su postgres -c "$B/pg_ctl -D $D/data -m fast stop >/dev/null"
