#!/usr/bin/env bash
# Writes real ClientHellos into seeds/client_hello/: openssl s_client connects to a loopback
# listener that keeps the first bytes it receives and closes.
# Usage: tests/fuzz/capture-client-hello.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
out=seeds/client_hello
mkdir -p "$out"

capture() { # FILE OPENSSL-ARGS...
  local file=$1
  shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 - "$port" "$out/$file" <<'PY' &
import socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(10)
conn, _ = srv.accept()
conn.settimeout(0.5)
data = b""
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        chunk = conn.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    data += chunk
open(path, "wb").write(data)
conn.close()
PY
  local listener=$!
  sleep 0.3
  timeout 5 openssl s_client -connect "127.0.0.1:$port" "$@" </dev/null >/dev/null 2>&1 || true
  wait "$listener"
  echo "$out/$file: $(wc -c <"$out/$file") bytes"
}

capture openssl-tls13-sni -servername blog.example.com -tls1_3
capture openssl-tls12-sni -servername shop.example.com -tls1_2
capture openssl-any-sni-alpn -servername a.localhost -alpn h2,http/1.1
capture openssl-no-sni -noservername

# The first one again, its handshake message cut into records of 64 bytes.
python3 - "$out/openssl-tls13-sni" "$out/openssl-tls13-sni-64-byte-records" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
message = data[5:5 + int.from_bytes(data[3:5], "big")]
out = b"".join(
    b"\x16\x03\x01" + len(message[i:i + 64]).to_bytes(2, "big") + message[i:i + 64]
    for i in range(0, len(message), 64)
)
open(sys.argv[2], "wb").write(out)
PY
echo "$out/openssl-tls13-sni-64-byte-records: $(wc -c <"$out/openssl-tls13-sni-64-byte-records") bytes"
