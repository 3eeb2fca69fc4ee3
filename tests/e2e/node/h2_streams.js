// Opens several requests on ONE HTTP/2 connection (h2c prior knowledge, or
// TLS with ALPN when the base URL is https) and reports, per path, the
// status, the negotiated protocol and what arrived within the wait.
// usage: node h2_streams.js <base-url> <wait-ms> <ca-file|-> <path>...
const http2 = require("http2");
const fs = require("fs");

const [base, waitMs, caFile, ...paths] = process.argv.slice(2);
const options = caFile && caFile !== "-" ? { ca: fs.readFileSync(caFile) } : {};
const session = http2.connect(base, options);
const results = {};
session.on("error", (e) => { console.error(String(e)); process.exit(2); });
for (const path of paths) {
  const req = session.request({ ":path": path, accept: "text/event-stream" });
  const r = (results[path] = { status: null, data: "" });
  req.setEncoding("utf8");
  req.on("response", (h) => { r.status = h[":status"]; });
  req.on("data", (d) => { r.data += d; });
  req.on("error", (e) => { r.error = String(e); });
  req.end();
}
setTimeout(() => {
  const alpn = session.alpnProtocol || null;
  session.destroy();
  // Exit only once the pipe has taken everything.
  process.stdout.write(JSON.stringify({ alpn, results }) + "\n", () => process.exit(0));
}, Number(waitMs));
