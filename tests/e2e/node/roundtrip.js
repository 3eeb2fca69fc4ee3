// kafkajs through the proxy: produce records with headers, then consume them
// back in a consumer group and verify keys, values and headers.
// Usage: node roundtrip.js BOOTSTRAP TOPIC COUNT
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, countArg] = process.argv.slice(2);
  const count = Number(countArg);
  const kafka = new Kafka({ clientId: "kafkajs-e2e", brokers: [bootstrap], logLevel: logLevel.WARN });
  const sent = new Map();
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) {
    const key = `kjs${i}`;
    const value = Buffer.concat([Buffer.from([0, 255, 7]), Buffer.from(`kafkajs-${i}`)]);
    sent.set(key, value.toString("hex"));
    messages.push({ key, value, headers: { "trace-id": `kafkajs-${i}` } });
  }
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `kafkajs-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let verified = 0;
  const failures = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout after ${verified} records`)), 120000);
    consumer.run({
      eachMessage: async ({ message }) => {
        const key = message.key.toString();
        const i = key.slice(3);
        if (sent.get(key) !== message.value.toString("hex")) failures.push(`value of ${key}`);
        if (String(message.headers["trace-id"]) !== `kafkajs-${i}`) failures.push(`header of ${key}`);
        verified += 1;
        if (verified === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  if (failures.length) throw new Error(failures.join(", "));
  console.log(`verified ${verified}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
