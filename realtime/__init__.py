"""Real-time push over MQTT (docs/api/realtime.md, docs/operations/mqtt.md): the server's
broker client (publishes after commit, manages per-client broker credentials through
Mosquitto's dynamic-security plugin, relays typing), the topics and payloads, and the
generated broker configuration of `pinhole up`. MQTT only wakes clients up: the API's
catch-up by sequence is the source of truth."""
