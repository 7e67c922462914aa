#!/usr/bin/env bash
# End-to-end check of the servers started by scripts/ftp-servers.sh, with curl (not ftpseg):
#   * anonymous and the password user download big.bin and "sub dir/name with spaces.bin"
#     byte-exact (sha256 against the served file), on every instance, all at once;
#   * a ranged download (curl -r 1000-1999) on every instance;
#   * on -capped and -limited: the time of a 16 MiB ranged download, one connection
#     (expect ~4 s at the default 4 MiB/s);
#   * on -limited: N logged-in sessions held open, the N+1th is refused (limit_probe.py).
# usage: scripts/ftp-servers/verify.sh [--quick]   (--quick: prime.bin instead of big.bin)
# Prints one line per check and "N passed, N failed"; exits 1 if any failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${FTPSEG_SERVERS_DIR:-/tmp/ftpseg-servers}
STATE="$DIR/servers.json"
BIG=big.bin
[[ ${1:-} == --quick ]] && BIG=prime.bin
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
[[ -f $STATE ]] || { echo "verify: no $STATE; run scripts/ftp-servers.sh start" >&2; exit 1; }

read -r SERVED USER PASSWORD RATE MAXIP < <(python3 -c '
import json, sys; s = json.load(open(sys.argv[1]))
print(s["served"], s["user"], s["password"], s["rate"], s["max_per_ip"])' "$STATE")
mapfile -t SERVERS < <(python3 -c '
import json, sys
for s in json.load(open(sys.argv[1]))["servers"]:
    print(s["name"], s["variant"], s["host"], s["port"])' "$STATE")

OUT=$(mktemp -d /tmp/ftpseg-verify.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
pass=0 fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
ko() { echo "FAIL $*"; fail=$((fail + 1)); }

declare -A SHA
for f in "$BIG" "sub dir/name with spaces.bin"; do SHA[$f]=$(sha256sum <"$SERVED/$f" | cut -d' ' -f1); done
SHA_RANGE=$(dd if="$SERVED/prime.bin" bs=1000 skip=1 count=1 status=none | sha256sum | cut -d' ' -f1)

# 1. Whole-file downloads, all instances at once (each connection is capped on its own, so
#    running them together does not slow the capped ones down). On -limited at most 2 at once,
#    so that the per-IP limit does not refuse our own downloads.
fetch() { # name host port who file
  local auth=() tag="$1.$4.${5//[ \/]/_}"
  [[ $4 == user ]] && auth=(-u "$USER:$PASSWORD")
  curl -sS --max-time 300 "${auth[@]}" "ftp://$2:$3/${5// /%20}" -o "$OUT/$tag" 2>"$OUT/$tag.err"
  echo $? >"$OUT/$tag.rc"
}
pids=()
for line in "${SERVERS[@]}"; do
  read -r name variant host port <<<"$line"
  (
    for f in "$BIG" "sub dir/name with spaces.bin"; do
      fetch "$name" "$host" "$port" anon "$f" &
      fetch "$name" "$host" "$port" user "$f" &
      [[ $variant == limited ]] && wait
    done
    wait
  ) &
  pids+=($!)
done
wait "${pids[@]}"
for line in "${SERVERS[@]}"; do
  read -r name variant host port <<<"$line"
  for who in anon user; do
    for f in "$BIG" "sub dir/name with spaces.bin"; do
      tag="$name.$who.${f//[ \/]/_}"
      got=$(sha256sum <"$OUT/$tag" 2>/dev/null | cut -d' ' -f1 || true)
      if [[ $(cat "$OUT/$tag.rc") == 0 && $got == "${SHA[$f]}" ]]; then
        ok "$name $who $f sha256"
      else
        ko "$name $who $f (curl rc $(cat "$OUT/$tag.rc"): $(cat "$OUT/$tag.err"))"
      fi
      rm -f "$OUT/$tag"
    done
  done
done

# 2. Ranged download (REST 1000, RETR, close after 1000 bytes), as the password user.
for line in "${SERVERS[@]}"; do
  read -r name variant host port <<<"$line"
  if curl -sS --max-time 30 -u "$USER:$PASSWORD" -r 1000-1999 "ftp://$host:$port/prime.bin" \
    -o "$OUT/range" && [[ $(sha256sum <"$OUT/range" | cut -d' ' -f1) == "$SHA_RANGE" ]]; then
    ok "$name range 1000-1999"
  else
    ko "$name range 1000-1999"
  fi
done

# 3. Throttle: 16 MiB on one connection, anonymous, one instance after the other.
for line in "${SERVERS[@]}"; do
  read -r name variant host port <<<"$line"
  [[ $variant == plain ]] && continue
  t=$(curl -sS --max-time 60 -r 0-16777215 "ftp://$host:$port/mid.bin" -o /dev/null \
    -w '%{time_total} %{size_download}')
  read -r secs bytes <<<"$t"
  rate=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.2f", b / s / 1048576 }')
  want=$(awk -v r="$RATE" 'BEGIN { printf "%.2f", r / 1048576 }')
  # within 15% of the cap
  if awk -v a="$rate" -v w="$want" 'BEGIN { exit !(a > w * 0.85 && a < w * 1.15) }'; then
    ok "$name throttle: 16 MiB in ${secs}s = $rate MiB/s (cap $want)"
  else
    ko "$name throttle: 16 MiB in ${secs}s = $rate MiB/s (cap $want)"
  fi
done

# 4. Per-IP limit on -limited: hold MAXIP sessions, the next one must be refused.
for line in "${SERVERS[@]}"; do
  read -r name variant host port <<<"$line"
  [[ $variant == limited ]] || continue
  for who in anon user; do
    creds=()
    [[ $who == user ]] && creds=("$USER" "$PASSWORD")
    if res=$(timeout 60 python3 "$HERE/limit_probe.py" "$host" "$port" "$MAXIP" "${creds[@]}"); then
      ok "$name $who per-IP limit: $(tail -n 1 <<<"$res" | sed 's/^extra session, //')"
    else
      ko "$name $who per-IP limit: $(tr '\n' ' ' <<<"$res")"
    fi
  done
done

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
