#!/usr/bin/env bash
# Makes test credentials for ferry (and QEMU) links: a CA, a server and a client certificate in
# QEMU's x509 layout, and a PSK file in QEMU's keys.psk format. For tests and trials; in
# production use your own CA (docs/SECURITY.md).
#
#   scripts/make-credentials.sh DIR [--san LIST] [--client-cn CN] [--server-cn CN]
#                                   [--ca-from DIR2] [--days N]
#
#   DIR/x509/     ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
#                 client-key.pem      (--tls-x509-dir DIR/x509 on both ends)
#   DIR/ca-key.pem                    the CA's key (kept out of the x509 directory)
#   DIR/keys.psk  ferry:<64 hex digits> (--tls-psk-file DIR/keys.psk on both ends)
#
#   --san LIST      the receiver certificate's names (default DNS:localhost,IP:127.0.0.1):
#                   ferry send checks the host of --peer against them
#   --client-cn CN  the sender certificate's common name (default ferry-send)
#   --server-cn CN  the receiver certificate's common name (default ferry-recv)
#   --ca-from DIR2  sign with the CA of an earlier DIR2 instead of a new one
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; [[ $# -ge 1 ]]; exit; }
dir=$1
shift
san=DNS:localhost,IP:127.0.0.1 client_cn=ferry-send server_cn=ferry-recv ca_from= days=365
while [[ $# -gt 0 ]]; do
  case $1 in
    --san) san=$2 ;;
    --client-cn) client_cn=$2 ;;
    --server-cn) server_cn=$2 ;;
    --ca-from) ca_from=$2 ;;
    --days) days=$2 ;;
    *) echo "make-credentials: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift 2
done
command -v openssl >/dev/null || { echo "make-credentials: needs openssl (scripts/setup.sh)" >&2; exit 1; }

mkdir -p "$dir/x509"
umask 077
x=$dir/x509
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [[ -n $ca_from ]]; then
  cp "$ca_from/x509/ca-cert.pem" "$x/ca-cert.pem"
  cp "$ca_from/ca-key.pem" "$dir/ca-key.pem"
else
  key "$dir/ca-key.pem"
  openssl req -x509 -new -key "$dir/ca-key.pem" -days "$days" -subj "/O=ferry test/CN=ferry test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$x/ca-cert.pem" 2>/dev/null
fi

# leaf NAME CN EXTENSIONS
leaf() {
  key "$x/$1-key.pem"
  openssl req -new -key "$x/$1-key.pem" -subj "/O=ferry test/CN=$2" -out "$dir/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$x/ca-cert.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -days "$days" -extfile "$dir/$1.ext" -out "$x/$1-cert.pem" 2>/dev/null
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}
leaf server "$server_cn" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san"
leaf client "$client_cn" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f "$x/ca-cert.srl" "$dir/ca-cert.srl"
chmod 644 "$x"/*-cert.pem

echo "ferry:$(openssl rand -hex 32)" >"$dir/keys.psk"
echo "credentials in $dir: --tls-x509-dir $x  or  --tls-psk-file $dir/keys.psk"
