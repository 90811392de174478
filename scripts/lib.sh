# Shared helpers for the demo and stack scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS: polls until the URL answers 200.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until python3 - "$url" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
  do
    if ((SECONDS > deadline)); then
      return 1
    fi
    sleep 0.5
  done
}
