#!/usr/bin/env bash
# Certificates and SuperNode keys for the TLS (with-tls.yml) and auth (with-auth.yml) overlays.
#
#   ./gen-certs.sh [OUT_DIR]        (OUT_DIR defaults to this script's folder, i.e. docker/)
#
# Writes
#   OUT_DIR/certificates/ca.crt, ca.key          self-signed CA (ca.key never leaves the host)
#   OUT_DIR/certificates/server.pem, server.key  SuperLink; SANs DNS:superlink, DNS:localhost,
#                                                IP:127.0.0.1, IP:::1 (+ $SUPERLINK_EXTRA_SANS)
#   OUT_DIR/certificates/supernode-N.pem/.key    SuperNode N's Runtime API (SuperExec -> SuperNode);
#                                                SANs DNS:supernode-N, DNS:localhost, IP:127.0.0.1,
#                                                IP:::1 (the last three for host networking)
#   OUT_DIR/keys/supernode_N, supernode_N.pub    SuperNode N's EC P-384 auth key pair (OpenSSH format)
# for N = 1..$NUM_SUPERNODES (default 3).
#
# Idempotent: existing files are kept; a certificate is only (re)issued when it is missing or
# no longer verifies against the CA (e.g. after the CA was deleted and recreated).
# Environment:
#   NUM_SUPERNODES=3
#   SUPERLINK_EXTRA_SANS="IP:10.0.0.5,DNS:flower.example.org"  more SANs for a SuperLink reached
#                                                               by SuperNodes on other hosts
#   DAYS=365
set -euo pipefail

OUT_DIR=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
NUM_SUPERNODES=${NUM_SUPERNODES:-3}
DAYS=${DAYS:-365}
CERTS="$OUT_DIR/certificates"
KEYS="$OUT_DIR/keys"

for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "gen-certs.sh: '$tool' is required" >&2; exit 1; }
done
mkdir -p "$CERTS" "$KEYS"
umask 077  # private keys: owner only

if [[ ! -s "$CERTS/ca.crt" || ! -s "$CERTS/ca.key" ]]; then
  echo "creating CA: $CERTS/ca.crt"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" -subj "/O=Bouquet demo CA/CN=Bouquet demo CA" \
    2>/dev/null
fi

# issue NAME "SAN,SAN,..." : a server certificate NAME.pem/NAME.key signed by the CA
issue() {
  local name=$1 sans=$2 pem="$CERTS/$1.pem" key="$CERTS/$1.key"
  if [[ -s "$pem" && -s "$key" ]] && openssl verify -CAfile "$CERTS/ca.crt" "$pem" >/dev/null 2>&1; then
    echo "keeping $pem"
    return
  fi
  echo "issuing $pem (subjectAltName=$sans)"
  local ext="$CERTS/$name.ext" csr="$CERTS/$name.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
    "$sans" >"$ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$key" -out "$csr" \
    -subj "/O=Bouquet/CN=$name" 2>/dev/null
  openssl x509 -req -in "$csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -out "$pem" -days "$DAYS" -sha256 -extfile "$ext" 2>/dev/null
  rm -f "$csr" "$ext"
}

SUPERLINK_SANS="DNS:superlink,DNS:localhost,IP:127.0.0.1,IP:::1"
if [[ -n "${SUPERLINK_EXTRA_SANS:-}" ]]; then
  SUPERLINK_SANS="$SUPERLINK_SANS,$SUPERLINK_EXTRA_SANS"
fi
issue server "$SUPERLINK_SANS"

for ((n = 1; n <= NUM_SUPERNODES; n++)); do
  issue "supernode-$n" "DNS:supernode-$n,DNS:localhost,IP:127.0.0.1,IP:::1"
  if [[ ! -s "$KEYS/supernode_$n" || ! -s "$KEYS/supernode_$n.pub" ]]; then
    echo "creating SuperNode auth key $KEYS/supernode_$n"
    rm -f "$KEYS/supernode_$n" "$KEYS/supernode_$n.pub"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "bouquet-supernode-$n" -f "$KEYS/supernode_$n"
  else
    echo "keeping $KEYS/supernode_$n"
  fi
done

# Certificates and public keys are public.
chmod 644 "$CERTS"/*.pem "$CERTS/ca.crt" "$KEYS"/*.pub
chmod 755 "$CERTS" "$KEYS"

cat <<EOF
done. Private keys are readable by their owner only. The containers run as uid 49999; on Linux
hand the mounted private keys over to it before 'docker compose up':
  sudo chown 49999:49999 $CERTS/server.key $CERTS/supernode-*.key $KEYS/supernode_?
EOF
