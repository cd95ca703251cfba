#!/bin/sh
# One KRaft node: formats /var/lib/kafka/data once, then runs the broker in the
# foreground. KAFKA_ADVERTISED_HOST is the name clients reach it by (the Service's DNS name).
set -eu
dir=/var/lib/kafka
{
  cat /opt/kafka/node.properties
  cat <<PROPS
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST}:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
PROPS
} >"$dir/server.properties"
if [ ! -f "$dir/data/meta.properties" ]; then
  java -Xmx256m -Dlog4j.configuration=file:/opt/kafka/log4j.properties -cp '/opt/kafka/libs/*' \
    kafka.tools.StorageTool format -t "$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" \
    -c "$dir/server.properties" --ignore-formatted
fi
exec java -Xms384m -Xmx384m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
  -Dlog4j.configuration=file:/opt/kafka/log4j.properties -cp '/opt/kafka/libs/*' kafka.Kafka "$dir/server.properties"
