#!/usr/bin/env bash
# TLS and SASL material for a pilot's Kafka (deploy/docker-compose.sasl-ssl.yml), made
# with openssl: a CA of your own, the broker's key and certificate for the host names
# clients use, and a random password for citybrain's Kafka user.
#   deploy/kafka/make-secrets.sh deploy/secrets kafka [more host names or IPs...]
# Writes into DIR (created):
#   ca.pem                   the CA clients trust      (CITYBRAIN_KAFKA_SSL_CAFILE)
#   ca.key                   the CA's key: keep it offline, it signs broker certificates
#   broker.p12               the broker's key and certificate chain (PKCS12)
#   broker-store-password    that keystore's password (the apache/kafka image reads it)
#   kafka-password           citybrain's password      (CITYBRAIN_KAFKA_SASL_PASSWORD_FILE)
#   kafka_server_jaas.conf   the broker's SASL/PLAIN user list holding that password
# A city whose Kafka has its own CA and users needs none of this: point the Kafka
# settings (README, "Kafka with TLS and SASL") at what its Kafka team hands out.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR HOST [HOST...]" >&2; exit 2; }
dir=$1; shift
cn=$1
san=""
for h in "$@"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
mkdir -p "$dir" && cd "$dir"
umask 077
days=825  # the longest validity clients accept for a server certificate
if [ ! -e ca.pem ]; then  # one CA per directory: re-running renews the broker's certificate only
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=citybrain Kafka CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
fi
openssl req -newkey rsa:3072 -nodes -subj "/CN=$cn" -keyout broker.key -out broker.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "${san%,}" > broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile broker.ext -out broker.pem 2>/dev/null
[ -e broker-store-password ] || openssl rand -hex 16 > broker-store-password
openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
  -passout "file:broker-store-password" -out broker.p12
rm -f broker.key broker.csr broker.ext
[ -e kafka-password ] || openssl rand -hex 24 > kafka-password
cat > kafka_server_jaas.conf <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  user_citybrain="$(cat kafka-password)";
};
JAAS
# The broker's container runs as another uid than yours: let it read, nobody else write.
chmod 644 ca.pem broker.pem broker.p12 broker-store-password kafka-password kafka_server_jaas.conf
echo "made in $dir: ca.pem broker.p12 kafka-password kafka_server_jaas.conf (for $*)"
