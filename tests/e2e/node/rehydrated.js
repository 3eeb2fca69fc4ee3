// kafkajs reading through the proxy in a consumer group (offsets committed):
// prints one JSON line per record: partition, offset, key, value length and
// SHA-256, headers.
// Usage: node rehydrated.js BOOTSTRAP TOPIC COUNT GROUP CLIENT_ID
const crypto = require("crypto");
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, countArg, groupId, clientId] = process.argv.slice(2);
  const count = Number(countArg);
  const kafka = new Kafka({ clientId, brokers: [bootstrap], logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 8 * 1024 * 1024, maxBytes: 64 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout after ${seen} records`)), 120000);
    consumer.run({
      autoCommit: true,
      eachMessage: async ({ partition, message, heartbeat }) => {
        const headers = {};
        for (const [k, v] of Object.entries(message.headers || {})) headers[k] = String(v);
        const value = message.value || Buffer.alloc(0);
        console.log(JSON.stringify({
          partition, offset: Number(message.offset), key: message.key ? message.key.toString() : null,
          len: value.length, sha256: crypto.createHash("sha256").update(value).digest("hex"), headers,
        }));
        seen += 1;
        await heartbeat();
        if (seen === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.commitOffsets([]).catch(() => {});
  await consumer.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
