#!/usr/bin/env bash
# Four real FTP servers on 127.0.0.1 for ftpseg's integration tests and benchmarks:
# vsftpd, proftpd, pure-ftpd (Debian 12 packages) and pyftpdlib (PyPI), three instances each.
#
#   scripts/ftp-servers.sh start [--rate BYTES_PER_SEC] [--max-per-ip N] [--file NAME SIZE]...
#   scripts/ftp-servers.sh stop
#   scripts/ftp-servers.sh status
#
# Environment: FTPSEG_SERVERS_DIR (state folder, default /tmp/ftpseg-servers),
#              FTPSEG_SERVERS_BASE_PORT (default 22100).
# The tests read $FTPSEG_SERVERS_DIR/servers.json. Details, ports and server quirks:
# docs/servers.md.
#
# Why it is done this way:
# * Debian's vsftpd, proftpd-core and pure-ftpd each declare "Conflicts: ftp-server", so apt
#   installs only one of them. We fetch all three with `apt-get download` and unpack them with
#   `dpkg-deb -x` into the state folder: no maintainer script runs, so no system service, no
#   /etc/<server> config and no init script appears. Only their shared libraries are installed
#   with apt (taken from each package's Depends, then checked with ldd).
# * Every instance has its own config, logs and pid file in $DIR/inst/<name>/, and is started
#   in its own session (setsid) so `stop` can end it and its per-connection children, and
#   nothing else. A pid counts as ours only if its start time matches the one we recorded.
# * System changes, all idempotent: users `ftpseg` (the password user) and `ftp` (pure-ftpd's
#   anonymous login is hard-wired to the system user "ftp" and chroots to its home), and
#   /etc/pam.d/ftpseg-vsftpd (vsftpd checks local passwords through PAM only).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HERE="$SCRIPT_DIR/ftp-servers"              # pyftpd.py, helper.py
DIR=${FTPSEG_SERVERS_DIR:-/tmp/ftpseg-servers}
BASE_PORT=${FTPSEG_SERVERS_BASE_PORT:-22100}
HOST=127.0.0.1

FTP_USER=ftpseg
FTP_PASSWORD=ftpseg-pw-1                    # distinctive, so tests can grep for leaks
ANON_SYSUSER=ftp                            # pure-ftpd insists on this name
PAM_SERVICE=ftpseg-vsftpd
PYFTPDLIB_VERSION=2.2.0

DEFAULT_RATE=4194304                        # 4 MiB/s per connection on -capped/-limited
DEFAULT_MAX_PER_IP=4                        # on -limited (issue 5: "a per-IP limit of 4")
START_TIMEOUT=20                            # seconds for all servers to greet
PASV_WIDTH=400                              # passive ports per instance (pure-ftpd: /2 sessions)

KINDS=(vsftpd proftpd pure-ftpd pyftpdlib)
VARIANTS=(plain capped limited)

# Served files: relative path and size. Content: AES-128-CTR keystream keyed by the path.
FILES=(
  "empty.bin 0"
  "one.bin 1"
  "prime.bin 1000003"
  "mid.bin 67108864"
  "big.bin 268435456"
  "sub dir/name with spaces.bin 3145735"
  # A small tree for batches (ftpseg -r, globs, --checksum-file auto): empty files, spaces,
  # non-ASCII names, nesting; tree/SHA256SUMS lists the files at its top.
  "tree/a.bin 1048583"
  "tree/empty.bin 0"
  "tree/b c.bin 70001"
  "tree/sub dir/name with spaces.bin 200003"
  "tree/ünïcødé/ö ä.bin 5003"
  "tree/deep/er/one.bin 1"
  "tree/deep/empty/zero.bin 0"
)

# Writable by the password user only (folder inside the served one); everything else read-only.
UPLOAD_DIR=upload

FILES_MTIME="2024-01-02 03:04:05 UTC"       # MDTM of every file: 20240102030405

SERVED="$DIR/served"
INST="$DIR/inst"
OPT="$DIR/opt"
DEBS="$DIR/debs"
VENV="$DIR/venv-pyftpdlib-$PYFTPDLIB_VERSION"
STATE="$DIR/servers.json"
# The system python (helpers, the venv); any python3 on PATH if Debian's is missing.
SYS_PY=$(command -v /usr/bin/python3 || command -v python3 || echo /usr/bin/python3)

export DEBIAN_FRONTEND=noninteractive

log() { echo "ftp-servers: $*" >&2; }
die() { echo "ftp-servers: error: $*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $0 start [--rate BYTES_PER_SEC] [--max-per-ip N] [--file NAME SIZE]...
       $0 stop
       $0 status
Runs vsftpd, proftpd, pure-ftpd and pyftpdlib on $HOST, three instances each (<name>,
<name>-capped, <name>-limited). State: \$FTPSEG_SERVERS_DIR (default /tmp/ftpseg-servers).
EOF
  exit 2
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root: it installs packages, creates the users \
'$FTP_USER' and '$ANON_SYSUSER' and starts servers that switch users (try: sudo $0 $1)"
}

helper() { "$SYS_PY" "$HERE/helper.py" "$@"; }

# ---------------------------------------------------------------------------------------------
# Instance layout. Control ports: base + 10*kind + variant + 1 (vsftpd 22101-22103, proftpd
# 22111-22113, pure-ftpd 22121-22123, pyftpdlib 22131-22133 with the default base). Passive
# ranges: 400 ports each from base + 1000 (23100-27899), below Linux's ephemeral range.

# Prints: name kind variant port pasv_min pasv_max
instances() {
  local k v idx=0 name port pmin
  for k in "${!KINDS[@]}"; do
    for v in "${!VARIANTS[@]}"; do
      name=${KINDS[$k]}
      [[ ${VARIANTS[$v]} == plain ]] || name+="-${VARIANTS[$v]}"
      port=$((BASE_PORT + 10 * k + v + 1))
      pmin=$((BASE_PORT + 1000 + PASV_WIDTH * idx))
      echo "$name ${KINDS[$k]} ${VARIANTS[$v]} $port $pmin $((pmin + PASV_WIDTH - 1))"
      idx=$((idx + 1))
    done
  done
  # FTPS: vsftpd with explicit TLS and require_ssl_reuse=YES (tests/it/interop.rs), on the port
  # after the plain, capped and limited vsftpd.
  pmin=$((BASE_PORT + 1000 + PASV_WIDTH * idx))
  echo "vsftpd-tls vsftpd tls $((BASE_PORT + 4)) $pmin $((pmin + PASV_WIDTH - 1))"
}

# A test CA and a certificate for 127.0.0.1/localhost signed by it, for the TLS instance:
# $DIR/pki/ca.pem is what clients trust (ftpseg --ca-file). Made once.
ensure_pki() {
  local pki="$DIR/pki"
  if [[ -s $pki/ca.pem && -s $pki/leaf.pem && -s $pki/leaf.key ]]; then return 0; fi
  command -v openssl >/dev/null || ensure_apt openssl
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ftpseg test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$pki/leaf.key" -out "$pki/leaf.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    >"$pki/leaf.ext"
  openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/leaf.ext" -out "$pki/leaf.pem" 2>/dev/null
  chmod 600 "$pki/ca.key" "$pki/leaf.key"
  [[ -s $pki/leaf.pem ]] || die "could not make the test certificate in $pki"
}

# ---------------------------------------------------------------------------------------------
# Installing (idempotent)

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq >>"$DIR/apt.log" 2>&1 || die "apt-get update failed (see $DIR/apt.log):
$(tail -n 15 "$DIR/apt.log")"
    APT_UPDATED=1
  fi
}

# apt-get install the given packages that are not installed yet.
ensure_apt() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "apt-get install ${missing[*]} (output in $DIR/apt.log)"
  # Lock timeout: wait for another apt run (e.g. a test script installing something) to end.
  local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
  if ! "${apt[@]}" "${missing[@]}" >>"$DIR/apt.log" 2>&1; then
    apt_update_once
    "${apt[@]}" "${missing[@]}" >>"$DIR/apt.log" 2>&1 ||
      die "apt-get install ${missing[*]} failed:
$(tail -n 15 "$DIR/apt.log")"
  fi
}

# Download PKG's .deb into $DEBS (once) and unpack it into $OPT/PKG (once per .deb).
# Then install the libraries it depends on. Prints the unpack folder.
unpack_deb() {
  local pkg=$1 deb root
  mkdir -p "$DEBS" "$OPT"
  deb=$(compgen -G "$DEBS/${pkg}_*.deb" | head -n1 || true)
  if [[ -z $deb ]]; then
    log "apt-get download $pkg"
    # apt warns that it downloads "unsandboxed as root" into a root-owned folder: harmless.
    if ! (cd "$DEBS" && apt-get download -qq "$pkg" 2>/dev/null); then
      apt_update_once
      (cd "$DEBS" && apt-get download -qq "$pkg" 2>/dev/null) || die "apt-get download $pkg failed"
    fi
    deb=$(compgen -G "$DEBS/${pkg}_*.deb" | head -n1) || die "no .deb for $pkg after download"
  fi
  root="$OPT/$pkg"
  if [[ $(cat "$root/.unpacked-from" 2>/dev/null || true) != "$(basename "$deb")" ]]; then
    rm -rf "$root"
    mkdir -p "$root"
    dpkg-deb -x "$deb" "$root"
    basename "$deb" >"$root/.unpacked-from"
  fi
  # Shared libraries: the lib* packages among its Depends (first of each "a | b" choice).
  local libs
  libs=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' |
    grep -E '^lib' || true)
  # shellcheck disable=SC2086  # one package name per word
  ensure_apt $libs
  echo "$root"
}

check_ldd() {
  local bin=$1 missing
  missing=$(ldd "$bin" 2>&1 | grep "not found" || true)
  [[ -z $missing ]] || die "$bin lacks shared libraries:
$missing"
}

install_all() {
  # Tools this script uses itself. python3-venv for pyftpdlib's venv.
  local tools=()
  command -v openssl >/dev/null || tools+=(openssl)
  [[ -x $SYS_PY ]] || tools+=(python3)
  [[ ${#tools[@]} -eq 0 ]] || ensure_apt "${tools[@]}"
  "$SYS_PY" -c 'import ensurepip' 2>/dev/null || ensure_apt python3-venv

  VSFTPD_ROOT=$(unpack_deb vsftpd)
  PROFTPD_ROOT=$(unpack_deb proftpd-core)
  PUREFTPD_ROOT=$(unpack_deb pure-ftpd)
  check_ldd "$VSFTPD_ROOT/usr/sbin/vsftpd"
  check_ldd "$PROFTPD_ROOT/usr/sbin/proftpd"
  check_ldd "$PUREFTPD_ROOT/usr/sbin/pure-ftpd"

  if ! "$VENV/bin/python" -c "import sys, pyftpdlib; sys.exit(pyftpdlib.__ver__ != '$PYFTPDLIB_VERSION')" \
    2>/dev/null; then
    log "creating $VENV with pyftpdlib==$PYFTPDLIB_VERSION"
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check "pyftpdlib==$PYFTPDLIB_VERSION" >&2 ||
      die "pip install pyftpdlib==$PYFTPDLIB_VERSION failed"
  fi
}

# ---------------------------------------------------------------------------------------------
# Users, PAM, served files (idempotent)

ensure_users() {
  local mark="ftpseg test servers (scripts/ftp-servers.sh)"
  # Password user: shell /bin/bash (in /etc/shells, or vsftpd/proftpd refuse it), home = the
  # served folder, so every server's login folder (chrooted) is the served folder.
  if ! getent passwd "$FTP_USER" >/dev/null; then
    useradd --home-dir "$SERVED" --no-create-home --shell /bin/bash --comment "$mark" "$FTP_USER"
  fi
  if [[ $(getent passwd "$FTP_USER" | cut -d: -f6) != "$SERVED" ]]; then
    [[ $(getent passwd "$FTP_USER" | cut -d: -f5) == "$mark" ]] ||
      die "user $FTP_USER exists but was not made by this script; remove it or change it"
    usermod --home "$SERVED" "$FTP_USER"
  fi
  if ! FTPSEG_PW="$FTP_PASSWORD" helper check-password "$FTP_USER" FTPSEG_PW; then
    echo "$FTP_USER:$FTP_PASSWORD" | chpasswd
  fi
  # Anonymous: pure-ftpd serves ~ftp to anonymous, so `ftp` must exist with home = served.
  if ! getent passwd "$ANON_SYSUSER" >/dev/null; then
    useradd --system --home-dir "$SERVED" --no-create-home --shell /usr/sbin/nologin \
      --gid nogroup --comment "$mark" "$ANON_SYSUSER"
  fi
  if [[ $(getent passwd "$ANON_SYSUSER" | cut -d: -f6) != "$SERVED" ]]; then
    [[ $(getent passwd "$ANON_SYSUSER" | cut -d: -f5) == "$mark" ]] ||
      die "system user '$ANON_SYSUSER' exists with home $(getent passwd "$ANON_SYSUSER" | cut -d: -f6),
not $SERVED; pure-ftpd serves anonymous users from ~ftp. Change it (usermod --home $SERVED ftp)
or point FTPSEG_SERVERS_DIR at a folder whose served/ is that home."
    usermod --home "$SERVED" "$ANON_SYSUSER"
  fi
  # vsftpd authenticates local users through PAM service $PAM_SERVICE. Ours checks the password
  # and the account with pam_unix only (Debian's vsftpd file would also apply ftpusers lists).
  local pam="/etc/pam.d/$PAM_SERVICE"
  local want="# ftpseg test servers (scripts/ftp-servers.sh): vsftpd password check for the test user.
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so"
  [[ -f $pam && $(cat "$pam") == "$want" ]] || printf '%s\n' "$want" >"$pam"
}

# Deterministic content: AES-128-CTR keystream, key = first 16 bytes of sha256("ftpseg:" path).
gen_file() {
  local rel=$1 size=$2 path="$SERVED/$1" key tmp
  [[ -f $path && $(stat -c %s "$path") -eq $size ]] && return 0
  log "generating $rel ($size bytes)"
  mkdir -p "$(dirname "$path")"
  key=$(printf 'ftpseg:%s' "$rel" | sha256sum | cut -c1-32)
  tmp="$path.tmp.$$"
  # openssl dies of SIGPIPE when head has enough: expected, so its status is ignored.
  { openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt \
    </dev/zero 2>/dev/null || true; } | head -c "$size" >"$tmp"
  [[ $(stat -c %s "$tmp") -eq $size ]] || die "could not generate $path"
  chmod 644 "$tmp"
  # A fixed date, so that MDTM answers the same after a regeneration or on another machine.
  touch -d "$FILES_MTIME" "$tmp"
  mv -f "$tmp" "$path"
}

ensure_files() {
  # Read-only for every server user: root owns everything, folders 755, files 644. vsftpd and
  # pure-ftpd refuse (or warn about) a chroot root the login user can write to.
  mkdir -p "$SERVED"
  local entry
  for entry in "${FILES[@]}"; do
    gen_file "${entry% *}" "${entry##* }"
    touch -d "$FILES_MTIME" "$SERVED/${entry% *}"
  done
  # Checksums of the tree's top-level files, as mirrors publish beside their ISOs.
  (cd "$SERVED/tree" && sha256sum -- *.bin >SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS &&
    chmod 644 SHA256SUMS && touch -d "$FILES_MTIME" SHA256SUMS)
  chown -R root:root "$SERVED"
  find "$SERVED" -type d -exec chmod 755 {} +
  chmod 755 "$DIR"
  # The one writable place: upload/, owned by the password user (uploads by `ftpseg put` tests).
  # Anonymous users cannot write there (unix permissions, and each server's own settings).
  mkdir -p "$SERVED/$UPLOAD_DIR"
  chown "$FTP_USER" "$SERVED/$UPLOAD_DIR"
  chmod 755 "$SERVED/$UPLOAD_DIR"
}

files_ok() {
  local entry path mtime
  mtime=$(date -d "$FILES_MTIME" +%s)
  for entry in "${FILES[@]}"; do
    path="$SERVED/${entry% *}"
    [[ -f $path && $(stat -c %s.%Y "$path") == "${entry##* }.$mtime" ]] || return 1
  done
  [[ -f $SERVED/tree/SHA256SUMS ]] || return 1
}

# ---------------------------------------------------------------------------------------------
# Per-server config and launch. Each launcher gets: name variant port pasv_min pasv_max dir,
# and reads RATE / MAX_PER_IP. It sets LOG, XFERLOG, CONF and calls launch.

# Start "$@" in its own session, detached from our stdin/stdout/stderr and from the lock fd
# (so a caller that captures our output never waits on a server, and the lock is not held by
# the servers). Records "pid starttime" in $dir/pid.
launch() {
  local dir=$1
  shift
  (
    cd "$dir"
    # Close every inherited descriptor above 2: bash keeps copies of redirected ones (process
    # substitutions, saved stdin, our caller's pipes) and a server holding the write end of a
    # caller's pipe would make `$(scripts/ftp-servers.sh start)` wait forever.
    for fd in "/proc/$BASHPID/fd"/*; do
      fd=${fd##*/}
      if [[ $fd -gt 2 ]]; then eval "exec $fd>&-"; fi
    done
    exec setsid "$@" </dev/null >>"$dir/console.log" 2>&1
  ) &
  local pid=$!
  local start
  start=$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  echo "$pid $start" >"$dir/pid"
}

launch_vsftpd() {
  local name=$1 variant=$2 port=$3 pmin=$4 pmax=$5 dir=$6
  CONF="$dir/vsftpd.conf" LOG="$dir/vsftpd.log" XFERLOG="$dir/xferlog"
  mkdir -p "$DIR/vsftpd-empty"
  chmod 755 "$DIR/vsftpd-empty"
  local rate=0 maxip=0 sendfile=YES
  [[ $variant == plain || $variant == tls ]] || rate=$RATE
  [[ $variant != limited ]] || maxip=$MAX_PER_IP
  # sendfile makes the per-connection limit uneven (27-43 MiB/s under a 20 MiB/s cap,
  # shared/notes/servers-measured.md); it is exact without it.
  [[ $rate -eq 0 ]] || sendfile=NO
  cat >"$CONF" <<EOF
# $name: generated by scripts/ftp-servers.sh
listen=YES
listen_ipv6=NO
listen_address=$HOST
listen_port=$port
# We keep the listener in the foreground and background it ourselves (pid known).
background=NO
anonymous_enable=YES
anon_root=$SERVED
ftp_username=$ANON_SYSUSER
local_enable=YES
local_root=$SERVED
chroot_local_user=YES
# Writes (STOR, APPE, REST+STOR, RNFR/RNTO, DELE) for the password user, only where unix
# permissions allow: upload/. Anonymous uploads stay off (anon_upload_enable defaults to NO).
write_enable=YES
pam_service_name=$PAM_SERVICE
secure_chroot_dir=$DIR/vsftpd-empty
pasv_enable=YES
# Active mode (ftpseg --active): PORT/EPRT allowed, and the data connection comes from an
# ephemeral port (port 20 would need root in the session process).
port_enable=YES
connect_from_port_20=NO
pasv_min_port=$pmin
pasv_max_port=$pmax
max_clients=0
max_per_ip=$maxip
anon_max_rate=$rate
local_max_rate=$rate
use_sendfile=$sendfile
xferlog_enable=YES
dual_log_enable=YES
xferlog_std_format=YES
xferlog_file=$XFERLOG
vsftpd_log_file=$LOG
syslog_enable=NO
EOF
  if [[ $variant == tls ]]; then
    # Explicit TLS required for logins and data, and every data connection must resume its
    # control connection's session (vsftpd's default; what FTPS clients get wrong).
    cat >>"$CONF" <<EOF
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
rsa_cert_file=$DIR/pki/leaf.pem
rsa_private_key_file=$DIR/pki/leaf.key
ssl_ciphers=HIGH
seccomp_sandbox=NO
EOF
  fi
  : >>"$LOG"
  launch "$dir" "$VSFTPD_ROOT/usr/sbin/vsftpd" "$CONF"
}

launch_proftpd() {
  local name=$1 variant=$2 port=$3 pmin=$4 pmax=$5 dir=$6
  CONF="$dir/proftpd.conf" LOG="$dir/proftpd.log" XFERLOG="$dir/xferlog"
  local limits=""
  if [[ $variant != plain ]]; then
    # TransferRate is in KiB/s (1024 bytes); fractions allowed. Uploads too (ftpseg put tests).
    limits+="TransferRate RETR,STOR,APPE $(awk -v r="$RATE" 'BEGIN { printf "%.3f", r / 1024 }')"$'\n'
  fi
  if [[ $variant == limited ]]; then
    # proftpd counts sessions per host at login: the extra one gets 530 in reply to PASS.
    limits+="MaxClientsPerHost $MAX_PER_IP \"Too many connections from your IP (max $MAX_PER_IP)\""$'\n'
  fi
  cat >"$CONF" <<EOF
# $name: generated by scripts/ftp-servers.sh
ServerName "ftpseg-test"
ServerType standalone
# Also on ::1, same port: ftpseg's IPv6 tests (EPSV, and EPRT with --active).
DefaultAddress $HOST ::1
SocketBindTight on
Port $port
PassivePorts $pmin $pmax
User nobody
Group nogroup
PidFile $dir/proftpd.pid
ScoreboardFile $dir/proftpd.scoreboard
DelayTable $dir/proftpd.delay
ControlsEngine off
WtmpLog off
UseReverseDNS off
SystemLog $LOG
TransferLog $XFERLOG
MaxInstances 500
TimeoutIdle 600
# Password user from /etc/passwd + /etc/shadow, without PAM; no /etc/ftpusers.
AuthPAM off
AuthOrder mod_auth_unix.c
UseFtpUsers off
DefaultRoot $SERVED
AllowOverwrite off
<Limit WRITE>
  DenyAll
</Limit>
# upload/: writable by the password user (unix permissions keep anonymous out), with REST+STOR.
<Directory $SERVED/$UPLOAD_DIR>
  AllowOverwrite on
  AllowStoreRestart on
  <Limit WRITE>
    AllowAll
  </Limit>
</Directory>
# HASH, XMD5, XSHA256 (mod_digest), for verifying uploads.
ModulePath $PROFTPD_ROOT/usr/lib/proftpd
LoadModule mod_digest.c
$limits
<Anonymous $SERVED>
  User $ANON_SYSUSER
  Group nogroup
  UserAlias anonymous $ANON_SYSUSER
  RequireValidShell off
  <Limit WRITE>
    DenyAll
  </Limit>
  $limits
</Anonymous>
EOF
  "$PROFTPD_ROOT/usr/sbin/proftpd" -t -c "$CONF" >"$dir/configtest.log" 2>&1 ||
    die "proftpd rejects $CONF:
$(tail -n 20 "$dir/configtest.log")"
  : >>"$LOG"
  # -n: stay in the foreground (we background it); -q: quiet on the console.
  launch "$dir" "$PROFTPD_ROOT/usr/sbin/proftpd" -n -q -c "$CONF"
}

launch_pure_ftpd() {
  local name=$1 variant=$2 port=$3 pmin=$4 pmax=$5 dir=$6
  CONF="(command line, see $dir/command)" LOG="$dir/console.log" XFERLOG="$dir/xferlog"
  local args=(
    -S "$HOST,$port"            # standalone, bound to loopback only
    -p "$pmin:$pmax"            # passive ports; also caps sessions at half this range
    -c $((PASV_WIDTH / 2))      # ... which we allow in full
    -A                          # chroot everyone: user and anonymous see the served folder
    -l unix                     # the system user's password from /etc/shadow, no PAM
    -H                          # no reverse DNS
    -f none                     # no syslog; transfers go to the -O log
    -O "xferlog:$XFERLOG"
    -g "$dir/pure-ftpd.pid"
  )
  if [[ $variant != plain ]]; then
    # -t: anonymous, -T: other users; KiB/s, per session (each session is a process).
    local kib=$((RATE / 1024 > 0 ? RATE / 1024 : 1))
    args+=(-t "$kib" -T "$kib")
  fi
  [[ $variant != limited ]] || args+=(-C "$MAX_PER_IP")
  printf '%q ' "$PUREFTPD_ROOT/usr/sbin/pure-ftpd" "${args[@]}" >"$dir/command"
  echo >>"$dir/command"
  launch "$dir" "$PUREFTPD_ROOT/usr/sbin/pure-ftpd" "${args[@]}"
}

launch_pyftpdlib() {
  local name=$1 variant=$2 port=$3 pmin=$4 pmax=$5 dir=$6
  CONF="(command line, see $dir/command)" LOG="$dir/console.log" XFERLOG="$dir/console.log"
  local args=(--host "$HOST" --port "$port" --root "$SERVED" --user "$FTP_USER"
    --passive-ports "$pmin-$pmax" --state "$dir" --upload "$SERVED/$UPLOAD_DIR")
  [[ $variant == plain ]] || args+=(--rate "$RATE")
  [[ $variant != limited ]] || args+=(--max-per-ip "$MAX_PER_IP")
  printf '%q ' "$VENV/bin/python" "$HERE/pyftpd.py" "${args[@]}" >"$dir/command"
  echo >>"$dir/command"
  FTPSEG_FTP_PASSWORD=$FTP_PASSWORD launch "$dir" "$VENV/bin/python" "$HERE/pyftpd.py" "${args[@]}"
}

# ---------------------------------------------------------------------------------------------
# Stopping: only processes whose pid and start time we recorded, plus their descendants and
# their session (vsftpd/proftpd/pure-ftpd fork one process per connection).

# "pid start" of a running process of ours, from a pid file; empty if none.
recorded_pid() {
  local f=$1 pid start
  [[ -f $f ]] || return 0
  read -r pid start <"$f" || return 0
  [[ -n ${pid:-} ]] && helper alive "$pid" "${start:-x}" && echo "$pid"
  return 0
}

# The pid, every descendant, and every process in its session.
process_tree() {
  local root=$1
  ps -e -o pid=,ppid=,sid= | awk -v root="$root" '
    { pid[NR] = $1; ppid[NR] = $2; sid[NR] = $3 }
    END {
      keep[root] = 1
      for (i = 1; i <= NR; i++) if (sid[i] == root) keep[pid[i]] = 1
      do {
        added = 0
        for (i = 1; i <= NR; i++) if ((ppid[i] in keep) && !(pid[i] in keep)) { keep[pid[i]] = 1; added = 1 }
      } while (added)
      for (p in keep) print p
    }'
}

# True if PID exists and is not a zombie (an exited child waiting for its reaper: init here
# may take seconds to reap reparented ones, and a zombie holds no port or file).
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

stop_all() {
  local f pid pids=() n=0
  [[ -d $INST ]] || return 0
  for f in "$INST"/*/pid; do
    [[ -e $f ]] || continue
    pid=$(recorded_pid "$f")
    if [[ -n $pid ]]; then
      mapfile -t -O "${#pids[@]}" pids < <(process_tree "$pid")
      n=$((n + 1))
    fi
    rm -f "$f"
  done
  rm -f "$STATE"
  [[ ${#pids[@]} -gt 0 ]] || return 0
  log "stopping $n servers (${#pids[@]} processes)"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local _ left
  for _ in $(seq 1 50); do # up to 5 s
    left=()
    for pid in "${pids[@]}"; do running "$pid" && left+=("$pid"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    sleep 0.1
  done
  log "still running after SIGTERM, sending SIGKILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
  for _ in $(seq 1 30); do # up to 3 s
    left=()
    for pid in "${pids[@]}"; do running "$pid" && left+=("$pid"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    sleep 0.1
  done
  die "processes survived SIGKILL: ${left[*]}"
}

# ---------------------------------------------------------------------------------------------
# Commands

# Exit 0 if the state file describes servers with these settings, all up and greeting.
already_running() {
  [[ -f $STATE ]] || return 1
  local specs=() name kind variant host port pid start _log r m b s
  {
    IFS=$'\t' read -r r m b s || return 1
    [[ $r == "$RATE" && $m == "$MAX_PER_IP" && $b == "$BASE_PORT" && $s == "$SERVED" ]] || return 1
    while IFS=$'\t' read -r name kind variant host port pid start _log; do
      specs+=("$name:$host:$port:$pid:$start")
    done
  } < <(helper read-state "$STATE" 2>/dev/null)
  [[ ${#specs[@]} -eq $((${#KINDS[@]} * ${#VARIANTS[@]})) ]] || return 1
  files_ok || return 1
  # pure-ftpd serves the users' home folders: a start with another FTPSEG_SERVERS_DIR moved them.
  [[ $(getent passwd "$FTP_USER" | cut -d: -f6) == "$SERVED" &&
    $(getent passwd "$ANON_SYSUSER" | cut -d: -f6) == "$SERVED" ]] || return 1
  # busy-ok: a -limited instance whose slots a running test holds answers 421; it is up, and
  # restarting it would break that test.
  helper wait 5 busy-ok "${specs[@]}" >/dev/null
}

cmd_start() {
  RATE=$DEFAULT_RATE
  MAX_PER_IP=$DEFAULT_MAX_PER_IP
  while [[ $# -gt 0 ]]; do
    case $1 in
      --rate) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--rate needs a positive number of bytes/s"
        RATE=$2; shift 2 ;;
      --max-per-ip) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--max-per-ip needs a positive number"
        MAX_PER_IP=$2; shift 2 ;;
      # An extra served file (benches/peers.py: 1 GiB, 4 GiB), generated like the others.
      --file) [[ ${2:-} =~ ^[A-Za-z0-9._-]+$ && ${3:-} =~ ^[0-9]+$ ]] ||
        die "--file needs a plain NAME and a SIZE in bytes"
        FILES+=("$2 $3"); shift 3 ;;
      *) usage ;;
    esac
  done
  need_root start
  mkdir -p "$DIR" "$INST"
  chmod 755 "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 900 9 || die "another ftp-servers.sh holds $DIR/.lock"

  if already_running; then
    log "already running (rate $RATE, max-per-ip $MAX_PER_IP); state: $STATE"
    return 0
  fi
  stop_all

  install_all
  ensure_users
  ensure_files
  ensure_pki

  # Refuse to start over someone else's server.
  local name kind variant port pmin pmax
  while read -r name kind variant port pmin pmax; do
    helper port-free "$HOST" "$port" ||
      die "port $HOST:$port (for $name) is already in use by another program; set FTPSEG_SERVERS_BASE_PORT"
  done < <(instances)

  local table="$DIR/.table" specs=() dir pid start
  : >"$table"
  while read -r name kind variant port pmin pmax; do
    dir="$INST/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    "launch_${kind//-/_}" "$name" "$variant" "$port" "$pmin" "$pmax" "$dir"
    read -r pid start <"$dir/pid"
    specs+=("$name:$HOST:$port:$pid:$start")
    local r=0 m=0
    [[ $variant == plain || $variant == tls ]] || r=$RATE
    [[ $variant != limited ]] || m=$MAX_PER_IP
    printf '%s\t' "$name" "$kind" "$variant" "$HOST" "$port" "$pid" "$start" "$LOG" "$XFERLOG" \
      "$pmin" "$pmax" "$r" "$m" >>"$table"
    printf '%s\n' "$CONF" >>"$table"
  done < <(instances)

  local failed
  if ! failed=$(helper wait "$START_TIMEOUT" "${specs[@]}"); then
    while IFS=$'\t' read -r name why; do
      echo "ftp-servers: error: $name did not start: $why" >&2
      for f in "$INST/$name"/*.log; do
        [[ -s $f ]] || continue
        echo "--- tail of $f" >&2
        tail -n 15 "$f" >&2
      done
    done <<<"$failed"
    stop_all
    exit 1
  fi

  local files="$DIR/.files" entry
  : >"$files"
  for entry in "${FILES[@]}"; do printf '%s\t%s\n' "${entry% *}" "${entry##* }" >>"$files"; done
  FTPSEG_PW="$FTP_PASSWORD" helper write-json "$STATE" "$SERVED" "$FTP_USER" FTPSEG_PW "$RATE" \
    "$MAX_PER_IP" "$BASE_PORT" "$table" "$files"
  rm -f "$table" "$files"
  log "$(instances | wc -l) servers up on $HOST (rate $RATE B/s, max-per-ip $MAX_PER_IP); state: $STATE"
}

cmd_stop() {
  need_root stop
  [[ -d $DIR ]] || return 0
  exec 9>"$DIR/.lock"
  flock -w 900 9 || die "another ftp-servers.sh holds $DIR/.lock"
  stop_all
  log "stopped"
}

cmd_status() {
  local down=0 name kind variant port pmin pmax pid msg
  while read -r name kind variant port pmin pmax; do
    pid=$(recorded_pid "$INST/$name/pid")
    if [[ -n $pid ]] && msg=$(helper greet "$HOST" "$port" 3 busy-ok); then
      printf '%-20s up    %s:%-5s pid %-7s %s\n' "$name" "$HOST" "$port" "$pid" "$msg"
    else
      printf '%-20s down  %s:%s\n' "$name" "$HOST" "$port"
      down=$((down + 1))
    fi
  done < <(instances)
  [[ $down -eq 0 ]]
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) [[ $# -eq 1 ]] || usage; cmd_stop ;;
  status) [[ $# -eq 1 ]] || usage; cmd_status ;;
  *) usage ;;
esac
