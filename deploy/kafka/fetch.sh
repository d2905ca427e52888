#!/usr/bin/env bash
# Copies Apache Kafka's jars (the version pinned in pom.xml beside this script) from Maven
# Central into a cache directory, once, and prints that directory. Used by
# services/kafka_broker.py; needs Maven (Debian: apt-get install maven) on the first run only.
#   KAFKA_CACHE    where the cache lives (default ~/.cache/citybrain)
#   KAFKA_VERSION  another Apache Kafka release than the pinned one, to try it
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")}"
libs="${KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citybrain}/kafka-$version"
if [ ! -f "$libs/.complete" ]; then
    command -v mvn >/dev/null || { echo "fetching Apache Kafka $version needs Maven: install it (Debian: apt-get install maven)" >&2; exit 3; }
    rm -rf "$libs.partial"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -Dkafka.version="$version" \
        -DoutputDirectory="$libs.partial" >&2
    rm -rf "$libs" && mv "$libs.partial" "$libs" && touch "$libs/.complete"
fi
echo "$libs"
