// kafkajs producing through the proxy, one send per event: prints one JSON
// line per event with the error kafkajs reports (type, message) or the offset.
// Usage: node policy_produce.js BOOTSTRAP TOPIC EVENTS_JSON_FILE
// EVENTS_JSON_FILE: [{key, value (base64), headers: {name: value}}]
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, file] = process.argv.slice(2);
  const events = JSON.parse(fs.readFileSync(file, "utf8"));
  const kafka = new Kafka({ clientId: "policy-kafkajs", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 0 } });
  await producer.connect();
  for (const e of events) {
    const message = { key: e.key === null ? null : e.key, value: Buffer.from(e.value, "base64"), headers: e.headers };
    try {
      const [meta] = await producer.send({ topic, acks: -1, messages: [message] });
      console.log(JSON.stringify({ ok: true, offset: Number(meta.baseOffset) }));
    } catch (err) {
      const cause = err.cause || err;
      console.log(JSON.stringify({ ok: false, type: cause.type || err.name, message: cause.message || err.message }));
    }
  }
  await producer.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
