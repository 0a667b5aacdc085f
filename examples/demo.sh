#!/usr/bin/env sh
# The whole job on a mock board, no hardware: start a mock ESP32 in download
# mode, write the demo credentials, read them back with `atflash verify`.
set -eu
cd "$(dirname "$0")/.."

log="$(mktemp)"
atflash sim rom --chip esp32 >"$log" &
sim=$!
trap 'kill $sim 2>/dev/null; rm -f "$log"' EXIT

# Wait (at most 20 s) for the mock to print the port it listens on.
i=0
until port="$(sed -n 's/.*--port \(socket:[^ ]*\).*/\1/p' "$log")" && [ -n "$port" ]; do
  i=$((i + 1)); [ "$i" -le 200 ] || { echo "mock board did not start" >&2; exit 1; }
  sleep 0.1
done

set -x
atflash write --chip esp32 --port "$port" \
  client_cert examples/client.crt client_key examples/client.key client_ca examples/ca.crt
atflash verify --chip esp32 --port "$port" \
  client_cert examples/client.crt client_key examples/client.key client_ca examples/ca.crt
